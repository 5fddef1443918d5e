//! Bundles that must be refused whole: unsafe entries, corrupt archives,
//! and the real-world corpus.

use super::*;

/// Every unsafe entry is refused with 400 unsafe_archive naming the entry
/// and the reason, and nothing is written: not outside, not inside.
#[tokio::test]
async fn unsafe_archives_are_refused_whole() {
    let daemon = TestDaemon::start().await;
    let evil_abs = format!("/tmp/sandboxd-evil-{}", std::process::id());
    let good = |a: Archive| a.file("good.txt", b"fine").dir("d/");
    let cases: Vec<(&str, Archive, &str)> = vec![
        (
            "absolute",
            good(Archive::new()).file(&evil_abs, b"x"),
            "absolute",
        ),
        (
            "dotdot",
            good(Archive::new()).file("../../evil.txt", b"x"),
            "`..`",
        ),
        (
            "dotdot-inner",
            good(Archive::new()).file("d/../../evil.txt", b"x"),
            "`..`",
        ),
        (
            "win",
            good(Archive::new()).file("..\\..\\evil.txt", b"x"),
            "Windows",
        ),
        (
            "symlink-abs",
            good(Archive::new()).symlink("evil", "/etc"),
            "absolute",
        ),
        (
            "symlink-up",
            good(Archive::new()).symlink("d/evil", "../../.."),
            "outside",
        ),
        (
            "symlink-chain",
            good(Archive::new())
                .symlink("up", "d/..")
                .symlink("evil", "up/../x"),
            "outside",
        ),
        (
            "symlink-later",
            // Safe when written; made to escape by a later symlink.
            good(Archive::new())
                .symlink("evil", "t/../x")
                .symlink("t", "."),
            "outside",
        ),
        (
            "write-through-symlink",
            good(Archive::new())
                .symlink("evil", "d")
                .file("evil/x", b"x"),
            "symlink",
        ),
        (
            "overwrite-symlink",
            good(Archive::new())
                .symlink("evil", "good.txt")
                .file("evil", b"x"),
            "symlink",
        ),
        (
            "hardlink-abs",
            good(Archive::new()).hardlink("evil", "/etc/passwd"),
            "absolute",
        ),
        (
            "hardlink-up",
            good(Archive::new()).hardlink("evil", "../../x"),
            "`..`",
        ),
        (
            "hardlink-to-symlink",
            good(Archive::new())
                .symlink("d/s", "../good.txt")
                .hardlink("evil", "d/s"),
            "symlink",
        ),
        (
            "hardlink-missing",
            good(Archive::new()).hardlink("evil", "nope"),
            "regular file",
        ),
        (
            "char-device",
            good(Archive::new()).entry("evil", EntryType::Char, "", b"", 0o644),
            "device",
        ),
        (
            "block-device",
            good(Archive::new()).entry("evil", EntryType::Block, "", b"", 0o644),
            "device",
        ),
        (
            "fifo",
            good(Archive::new()).entry("evil", EntryType::Fifo, "", b"", 0o644),
            "FIFO",
        ),
    ];
    for (label, archive, reason) in cases {
        let (status, body) = put_bundle(&daemon, label, archive.gz(), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {body}");
        assert_eq!(body["error"]["code"], "unsafe_archive", "{label}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("entry \""),
            "{label}: names the entry: {message}"
        );
        assert!(
            message.contains(reason),
            "{label}: says why ({reason}): {message}"
        );
    }
    assert!(!Path::new(&evil_abs).exists());
    assert_nothing_escaped(&daemon, &[]);
}

/// Corrupt, truncated and non-tar bodies are 400 bad_archive with nothing
/// left behind.
#[tokio::test]
async fn corrupt_and_truncated_archives_are_refused() {
    let daemon = TestDaemon::start().await;
    let full = Archive::new()
        .file("a.txt", &noise(20_000))
        .file("b.txt", &noise(20_000))
        .tar();
    let gz = gzip(&full);
    let mut flipped = gz.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let mut bad_crc = gz.clone();
    let at = bad_crc.len() - 6;
    bad_crc[at] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("noise", noise(4096)),
        ("tar-cut-in-data", full[..512 + 10_000].to_vec()),
        ("tar-cut-at-entry", full[..512 + 20_480].to_vec()),
        ("gzip-cut", gz[..gz.len() / 2].to_vec()),
        ("gzip-flipped", flipped),
        ("gzip-bad-crc", bad_crc),
        ("zstd-cut", {
            let z = zstd::encode_all(&full[..], 3).unwrap();
            z[..z.len() - 10].to_vec()
        }),
        ("bzip2", b"BZh91AY&SY\x00\x00".to_vec()),
    ];
    for (label, body) in cases {
        let (status, answer) = put_bundle(&daemon, label, body, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_archive", "{label}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().len() > 20);
    }
    assert_nothing_escaped(&daemon, &[]);
}

/// The real-world corpus: each archive is extracted inside its run dir or
/// refused with a JSON error naming why; nothing lands outside.
#[tokio::test]
async fn corpus_archives_are_extracted_or_refused() {
    let daemon = TestDaemon::start().await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let expected: &[(&str, Result<&[&str], &str>)] = &[
        ("snyk-zip-slip.tar", Err("unsafe_archive")),
        ("snyk-zip-slip-win.tar", Err("unsafe_archive")),
        ("tar-rs-sparse-large.tar", Err("extracted_too_large")),
        // Has its end-of-archive blocks, only not the whole last record.
        ("tar-rs-simple_missing_last_header.tar", Ok(&["a", "b", "c"])),
        ("tar-rs-link.tar", Ok(&["file", "lnk"])),
        ("tar-rs-sparse.tar", Ok(&["sparse.txt", "sparse_begin.txt", "sparse_end.txt", "sparse_ext.txt"])),
        ("tar-rs-pax_size.tar", Ok(&["test"])),
        ("tar-rs-7z_long_path.tar", Ok(&[
            "this_is_a_folder_with_a_name_that_just_keeps_going_on_and_on_and_on_it_is_a_very_very_long_folder_name",
        ])),
        ("tar-rs-duplicate_dirs.tar", Ok(&["some_dir"])),
        // One header and no end-of-archive blocks: cut short.
        ("tar-rs-empty_filename.tar", Err("bad_archive")),
        ("tar-rs-biguid_pax.tar", Ok(&["test.txt"])),
        ("tar-rs-xattrs.tar", Ok(&["a"])),
        ("tar-rs-spaces.tar", Ok(&["a"])),
    ];
    let mut extracted = Vec::new();
    for (i, (name, want)) in expected.iter().enumerate() {
        let body = std::fs::read(corpus.join(name)).unwrap();
        let run_id = format!("c{i}");
        let (status, answer) = put_bundle(&daemon, &run_id, body, "").await;
        match want {
            Ok(names) => {
                assert_eq!(status, StatusCode::CREATED, "{name}: {answer}");
                let mut got: Vec<String> = std::fs::read_dir(daemon.work_root().join(&run_id))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                got.sort();
                assert_eq!(&got, names, "{name}");
                extracted.push(run_id);
            }
            Err(code) => {
                assert!(status.is_client_error(), "{name}: {status} {answer}");
                assert_eq!(answer["error"]["code"], *code, "{name}: {answer}");
            }
        }
    }
    let sparse = daemon.work_root().join("c5");
    assert_eq!(
        std::fs::metadata(sparse.join("sparse.txt")).unwrap().len(),
        16384
    );
    let text = std::fs::read(sparse.join("sparse_ext.txt")).unwrap();
    assert_eq!(text.len(), 45061);
    let link = daemon.work_root().join("c4");
    assert_eq!(
        std::fs::read_link(link.join("lnk")).unwrap(),
        PathBuf::from("file")
    );
    let names: Vec<&str> = extracted.iter().map(String::as_str).collect();
    let mut names = names;
    names.sort();
    assert_nothing_escaped(&daemon, &names);
}
