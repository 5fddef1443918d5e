//! The rules of ARCHITECTURE.md that a grep can check, checked on the
//! source tree: each fails when a change breaks its rule.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            (rel, text)
        })
        .collect()
}

/// Code lines only: comments go, so a rule is not tripped by prose.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn offenders(rule: impl Fn(&str, &str) -> bool) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(path, text)| rule(path, &code(text)))
        .map(|(path, _)| path)
        .collect()
}

/// Only `api/` and `error.rs` know HTTP: no other module uses axum.
#[test]
fn only_the_api_uses_axum() {
    let found = offenders(|path, code| {
        code.contains("axum::") && !path.starts_with("src/api/") && !path.starts_with("src/error")
    });
    assert!(
        found.is_empty(),
        "axum outside api/ and error.rs: {found:?}"
    );
}

/// Wire schemas (utoipa) are derived in `api/` and `error.rs` only: domain
/// types are converted, not served.
#[test]
fn wire_schemas_live_in_the_api() {
    let found = offenders(|path, code| {
        code.contains("ToSchema") && !path.starts_with("src/api/") && !path.starts_with("src/error")
    });
    assert!(found.is_empty(), "ToSchema outside api/: {found:?}");
}

/// `callbacks` does not depend on `runs` (runs hand it their ends).
#[test]
fn callbacks_know_nothing_of_runs() {
    let found =
        offenders(|path, code| path.starts_with("src/callbacks/") && code.contains("crate::runs"));
    assert!(found.is_empty(), "callbacks importing runs: {found:?}");
}

/// Only `state_dir.rs` names the files and folders of the state dir.
#[test]
fn only_state_dir_names_state_paths() {
    let names = [
        "\"record.json\"",
        "\"stdout.log\"",
        "\"stderr.log\"",
        "\"output.idx\"",
        "\"exit.json\"",
        "\"shim.log\"",
        "join(\"runs\")",
        "join(\"outbox\")",
        "join(\"bundles\")",
        "\"service.json\"",
    ];
    let found = offenders(|path, code| {
        !path.starts_with("src/state_dir") && names.iter().any(|n| code.contains(n))
    });
    assert!(
        found.is_empty(),
        "state paths joined outside state_dir: {found:?}"
    );
}

/// Only the init and the shims wait for processes they did not spawn
/// (`waitpid(-1)`-style reaping); the daemon waits only for its children.
#[test]
fn only_the_init_and_shims_reap() {
    let found = offenders(|path, code| {
        (code.contains("waitpid(") || code.contains("waitid("))
            && path != "src/supervise/init.rs"
            && !path.starts_with("src/runs/shim/")
    });
    assert!(
        found.is_empty(),
        "reaping outside the init and shims: {found:?}"
    );
}

/// No process-wide mutable state in the daemon: no `static` holding a
/// lock or a cell (what the daemon shares is passed in; two daemons share
/// nothing). The shim is a process of its own, one run per process.
#[test]
fn no_global_mutable_state() {
    let found = offenders(|path, code| {
        !path.starts_with("src/runs/shim/")
            && code.lines().any(|line| {
                let line = line.trim_start();
                (line.starts_with("static ") || line.starts_with("pub static "))
                    && ["Mutex", "RwLock", "LazyLock", "OnceLock", "Cell"]
                        .iter()
                        .any(|t| line.contains(t))
            })
    });
    assert!(found.is_empty(), "mutable statics: {found:?}");
}

/// No source file is much over 400 lines.
#[test]
fn source_files_stay_small() {
    let found: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 450)
        .map(|(path, text)| format!("{path} ({} lines)", text.lines().count()))
        .collect();
    assert!(found.is_empty(), "files over 450 lines: {found:?}");
}
