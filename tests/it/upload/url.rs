//! The URL form of bundle uploads, against a local origin.

use super::*;

/// The URL form against a local origin: 200 extracts; 404 and 403 are
/// 424 permanent; 500, 429, a dead port and a download slower than
/// timeout_s are 502 not permanent; an archive over the limit is 413
/// whether it declares its length or not. Query strings never show.
#[tokio::test]
async fn bundles_from_urls() {
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::routing::get;
    use futures::StreamExt;

    let good = Arc::new(Archive::new().file("fetched.txt", b"from the origin").gz());
    let big = Arc::new(Archive::new().file("big", &noise(200_000)).gz());
    let app = axum::Router::new()
        .route(
            "/ok.tar.gz",
            get({
                let good = good.clone();
                move |headers: HeaderMap| async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer t0k")
                    {
                        return (S::UNAUTHORIZED, Vec::new());
                    }
                    (S::OK, good.to_vec())
                }
            }),
        )
        .route("/missing", get(|| async { S::NOT_FOUND }))
        .route("/forbidden", get(|| async { S::FORBIDDEN }))
        .route("/broken", get(|| async { S::INTERNAL_SERVER_ERROR }))
        .route("/busy", get(|| async { S::TOO_MANY_REQUESTS }))
        .route(
            "/slow",
            get({
                let good = good.clone();
                move || async move {
                    let first = good[..10].to_vec();
                    let stream = futures::stream::once(
                        async move { Ok::<_, std::io::Error>(first) },
                    )
                    .chain(futures::stream::once(async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(Vec::new())
                    }));
                    Body::from_stream(stream)
                }
            }),
        )
        .route(
            "/big-declared",
            get({
                let big = big.clone();
                move || async move { big.to_vec() }
            }),
        )
        .route(
            "/big-streamed",
            get({
                let big = big.clone();
                move || async move {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
                    Body::from_stream(futures::stream::iter(chunks))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let daemon = TestDaemon::start_with(Options {
        args: vec!["--max-bundle-bytes=100000".to_owned()],
        ..Options::default()
    })
    .await;
    let (status, body) = post_bundle(
        &daemon,
        "u1",
        json!({"url": format!("{origin}/ok.tar.gz?sig=SECRETSIG"), "headers": {"Authorization": "Bearer t0k"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["entries"], 1);
    assert_eq!(
        std::fs::read(daemon.work_root().join("u1/fetched.txt")).unwrap(),
        b"from the origin"
    );

    let cases = [
        (
            "/ok.tar.gz?sig=SECRETSIG",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/missing",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/forbidden",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/broken",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/busy",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/slow",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/big-declared",
            StatusCode::PAYLOAD_TOO_LARGE,
            "bundle_too_large",
            None,
        ),
        (
            "/big-streamed",
            StatusCode::PAYLOAD_TOO_LARGE,
            "bundle_too_large",
            None,
        ),
    ];
    for (i, (path, want, code, permanent)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let (status, body) = post_bundle(
            &daemon,
            &format!("f{i}"),
            json!({"url": format!("{origin}{path}"), "timeout_s": 1}),
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(
            body["error"]["permanent"].as_bool(),
            permanent,
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("SECRETSIG"), "{path}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let (status, body) =
        post_bundle(&daemon, "dead", json!({"url": format!("{dead}/x.tgz")})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["permanent"], false);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{body}"
    );

    for bad in [
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "ftp://example.com/x"}),
        json!({"url": format!("{origin}/ok.tar.gz"), "timeout_s": 0}),
        json!({"url": format!("{origin}/ok.tar.gz"), "headers": {"bad name": "x"}}),
        json!({"url": format!("{origin}/ok.tar.gz"), "extra": 1}),
    ] {
        let (status, body) = post_bundle(&daemon, "bad", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_nothing_escaped(&daemon, &["u1"]);
}

/// A bundle URL with `sha256`: the right digest commits the bundle; a
/// wrong one is 424 bundle_checksum_mismatch, permanent, and leaves no
/// work dir and no staging dir; a malformed digest is 400.
#[tokio::test]
async fn bundle_urls_with_sha256() {
    use sha2::{Digest, Sha256};
    let archive = Arc::new(Archive::new().file("checked.txt", b"integrity").gz());
    let digest: String = Sha256::digest(&archive[..])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let app = axum::Router::new().route(
        "/b.tar.gz",
        axum::routing::get({
            let archive = archive.clone();
            move || async move { archive.to_vec() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/b.tar.gz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let daemon = TestDaemon::start().await;

    let wrong = "0".repeat(64);
    let (status, body) = post_bundle(&daemon, "bad", json!({"url": url, "sha256": wrong})).await;
    assert_eq!(status, StatusCode::FAILED_DEPENDENCY, "{body}");
    assert_eq!(body["error"]["code"], "bundle_checksum_mismatch");
    assert_eq!(body["error"]["permanent"], true);
    assert!(body["error"]["message"].as_str().unwrap().contains(&digest));
    assert!(
        work_root_names(&daemon).is_empty(),
        "nothing left: {:?}",
        work_root_names(&daemon)
    );

    for malformed in ["abc", &"g".repeat(64)] {
        let (status, body) =
            post_bundle(&daemon, "bad", json!({"url": url, "sha256": malformed})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}: {body}");
    }

    let (status, body) = post_bundle(
        &daemon,
        "good",
        json!({"url": url, "sha256": digest.to_uppercase()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        std::fs::read(daemon.work_root().join("good/checked.txt")).unwrap(),
        b"integrity"
    );
}
