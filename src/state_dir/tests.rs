use super::*;

/// Every path of the layout is where ARCHITECTURE.md says.
#[test]
fn layout_matches_the_documented_names() {
    let state = StateDir::new("/s");
    let run = state.run("r1");
    let table: [(PathBuf, &str); 11] = [
        (run.path().to_path_buf(), "/s/runs/r1"),
        (run.record(), "/s/runs/r1/record.json"),
        (run.stdout_log(), "/s/runs/r1/stdout.log"),
        (run.stderr_log(), "/s/runs/r1/stderr.log"),
        (run.output_index(), "/s/runs/r1/output.idx"),
        (run.exit_report(), "/s/runs/r1/exit.json"),
        (run.shim_log(), "/s/runs/r1/shim.log"),
        (state.outbox(), "/s/outbox"),
        (state.bundles(), "/s/bundles"),
        (state.bundle_record("r1"), "/s/bundles/r1.json"),
        (state.service_pid_file(), "/s/service.json"),
    ];
    for (path, want) in table {
        assert_eq!(path, Path::new(want));
    }
}

/// The subfolders are created with mode 0700, and creating them again is
/// harmless.
#[test]
fn subdirs_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    for _ in 0..2 {
        let dirs = state.create_subdirs().unwrap();
        assert_eq!(dirs, [state.runs(), state.outbox(), state.bundles()]);
    }
    for sub in StateDir::SUBDIRS {
        let mode = std::fs::metadata(dir.path().join(sub))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{sub}");
    }
}
