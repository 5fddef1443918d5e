//! A run that races the extraction: it swaps dirs of a staging tree, or
//! the work root itself, for symlinks to a dir outside; nothing the
//! daemon writes lands there (issue 14, point 12).

use super::*;

/// A bundle with many files in many dirs: a long extraction to race.
fn wide_bundle() -> Vec<u8> {
    let mut archive = Archive::new();
    for d in 0..40 {
        archive = archive.dir(&format!("d{d}/"));
        for f in 0..40 {
            archive = archive.file(&format!("d{d}/sub/f{f}.txt"), b"data");
        }
    }
    archive.tar()
}

/// A run swaps every dir it finds in staging dirs for a symlink to
/// `outside` (moving the dir into its own work dir) while bundles
/// extract: each upload either succeeds whole or
/// fails (unsafe_archive) leaving no staging dir, and `outside` stays
/// empty.
#[tokio::test]
async fn a_run_swapping_staging_dirs_for_symlinks_redirects_nothing() {
    let daemon = TestDaemon::start_binary().await;
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = daemon.work_root();
    let script = format!(
        "n=0; while :; do for d in {root}/.sandboxd-staging-*/d* {root}/.sandboxd-staging-*/d*/sub; do \
         n=$((n+1)); [ -d \"$d\" ] && [ ! -L \"$d\" ] && mv -T \"$d\" \"$PWD/aside$n\" 2>/dev/null \
         && ln -sT {out} \"$d\"; done; done",
        root = root.display(),
        out = outside.display()
    );
    let racer = daemon
        .start_run(json!({"run_id": "racer", "command": script}))
        .await;
    assert_eq!(racer["run_id"], "racer");
    let mut refused = 0;
    for n in 0..12 {
        let run_id = format!("victim{n}");
        let (status, body) = put_bundle(&daemon, &run_id, wide_bundle(), "").await;
        match status {
            StatusCode::CREATED => {}
            StatusCode::BAD_REQUEST => {
                refused += 1;
                assert!(
                    ["unsafe_archive", "bad_archive"]
                        .contains(&body["error"]["code"].as_str().unwrap()),
                    "{body}"
                );
            }
            other => panic!("{run_id}: {other} {body}; {}", daemon.logs()),
        }
    }
    daemon.post("/v1/runs/racer/cancel", json!({})).await;
    daemon.wait_ended("racer").await;
    assert!(
        tree(&outside).is_empty(),
        "written outside ({refused} uploads refused): {:?}",
        tree(&outside)
    );
    let staging: Vec<String> = work_root_names(&daemon)
        .into_iter()
        .filter(|n| n.starts_with(".sandboxd-staging-"))
        .collect();
    assert!(staging.is_empty(), "staging dirs left: {staging:?}");
}

/// A run that swaps the work root itself for a symlink: later bundles
/// and `PUT /v1/files` still write into the dir opened at start, never
/// where the symlink points.
#[tokio::test]
async fn a_work_root_swapped_for_a_symlink_redirects_nothing() {
    let daemon = TestDaemon::start().await;
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = daemon.work_root();
    let moved = root.with_extension("moved");
    let script = format!(
        "mv {root} {moved} && ln -s {out} {root}",
        root = root.display(),
        moved = moved.display(),
        out = outside.display()
    );
    let run = daemon.exec(json!({"command": script, "cwd": "/"})).await;
    assert_eq!(run["exit_code"], 0, "{run}");
    assert!(std::fs::symlink_metadata(&root).unwrap().is_symlink());
    let (status, body) = put_bundle(
        &daemon,
        "later",
        Archive::new().file("a.txt", b"x").tar(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = put_file(&daemon, &root.join("f.txt"), None, b"y").await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::FORBIDDEN,
        "{status} {body}"
    );
    assert!(
        tree(&outside).is_empty(),
        "written outside: {:?}",
        tree(&outside)
    );
    assert_eq!(std::fs::read(moved.join("later/a.txt")).unwrap(), b"x");
}
