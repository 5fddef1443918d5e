//! The README's shell examples, run in order against a real daemon, so
//! they can never drift from what the binary and the daemon do.
//!
//! Every ```` ```sh ```` block of README.md runs, except a block right after
//! a `<!-- not run by tests/it/readme.rs: why -->` line (building, starting
//! the daemon, the test suite, the benchmarks). The blocks run in one bash,
//! command by command, with `sandboxd` on the PATH, in a scratch dir;
//! `localhost:60001` and `dev-key` are replaced by the test daemon's
//! address and key. Each command must exit 0 and print no API error, unless
//! its own comment announces one (`# 401 ...`).

use std::path::PathBuf;
use std::process::Stdio;

use crate::support::{self, TestDaemon, KEY};

const SKIP: &str = "<!-- not run by tests/it/readme.rs";

/// The `sh` blocks to run, in order, and how many were skipped.
fn shell_blocks(readme: &str) -> (Vec<Vec<String>>, usize) {
    let mut blocks = Vec::new();
    let mut skipped = 0;
    let mut lines = readme.lines().peekable();
    let mut previous = "";
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let mut block = Vec::new();
            for line in lines.by_ref() {
                if line.trim() == "```" {
                    break;
                }
                block.push(line.to_owned());
            }
            match previous.starts_with(SKIP) {
                true => skipped += 1,
                false => blocks.push(block),
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    (blocks, skipped)
}

/// Whether `line`'s trailing comment announces an error answer.
fn expects_error(line: &str) -> bool {
    let Some((_, comment)) = line.split_once("  #") else {
        return false;
    };
    comment.contains("\"error\"") || comment.split_whitespace().any(|w| w.starts_with('4'))
}

/// One command of a block and what it printed.
struct Ran {
    command: String,
    code: i32,
    output: String,
}

async fn run_block(block: &[String], dir: &std::path::Path, daemon: &TestDaemon) -> Vec<Ran> {
    let port = daemon.url.rsplit(':').next().unwrap().to_owned();
    let commands: Vec<String> = block
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .cloned()
        .collect();
    let mut script = String::from("exec 2>&1\n");
    for (i, command) in commands.iter().enumerate() {
        let command = command
            .replace("localhost:60001", &format!("127.0.0.1:{port}"))
            .replace("dev-key", KEY);
        script.push_str(&format!("{command}\nprintf '\\n@@@ {i} %d\\n' $?\n"));
    }
    let bin_dir = PathBuf::from(support::bin()).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .env("PATH", path)
        .env("SANDBOXD_URL", &daemon.url)
        .env_remove("SESSION_API_KEY")
        .env_remove("SANDBOXD_SESSION_KEY_FILE")
        .env_remove("OH_SESSION_API_KEYS_0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("the block did not end in 120 s:\n{}", block.join("\n")))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ran = Vec::new();
    let mut rest = text.as_str();
    for (i, command) in commands.iter().enumerate() {
        let marker = format!("\n@@@ {i} ");
        let at = rest
            .find(&marker)
            .unwrap_or_else(|| panic!("the block stopped before {command:?}; output:\n{text}"));
        let output = rest[..at].to_owned();
        let after = &rest[at + marker.len()..];
        let (code, tail) = after.split_once('\n').unwrap_or((after, ""));
        ran.push(Ran {
            command: command.clone(),
            code: code.trim().parse().unwrap(),
            output,
        });
        rest = tail;
    }
    ran
}

/// The README's `sh` blocks, top to bottom, against one daemon: each
/// command succeeds, and the outputs the README's comments promise appear.
#[tokio::test]
async fn shell_examples_run_top_to_bottom() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let (blocks, skipped) = shell_blocks(&readme);
    assert!(blocks.len() >= 3, "too few blocks found: {}", blocks.len());
    assert!(skipped <= 4, "more blocks skipped than expected: {skipped}");
    let daemon = TestDaemon::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for block in &blocks {
        all.extend(run_block(block, scratch.path(), &daemon).await);
    }
    for ran in &all {
        let head: String = ran.output.chars().take(2000).collect();
        let shown = format!("{:?} exited {}; output:\n{head}", ran.command, ran.code);
        if expects_error(&ran.command) {
            assert!(
                ran.output.contains("{\"error\":{\"code\""),
                "no error: {shown}"
            );
            continue;
        }
        assert_eq!(ran.code, 0, "{shown}");
        assert!(!ran.output.contains("{\"error\":{\"code\""), "{shown}");
    }
    let output = |needle: &str| -> &str {
        &all.iter()
            .find(|r| r.command.starts_with(needle))
            .unwrap_or_else(|| panic!("no command of the README starts with {needle:?}"))
            .output
    };
    assert!(output("sandboxd exec --run-id r1 -- python3 main.py").contains("hello from main.py"));
    let masked = output("sandboxd exec --timeout 5m");
    assert!(masked.contains("DEBUG=1 TOKEN=****"), "{masked}");
    assert!(!masked.contains("hunter2"), "{masked}");
    assert!(output("sandboxd run show r1").contains("succeeded"));
    assert_eq!(output("sandboxd logs r2 "), "ready\ngot INT\n");
    assert!(
        output("curl -s -H \"$K\" -H \"$J\" $U/v1/runs -d '{\"command\": [\"python3\"")
            .contains("42")
    );
    assert_eq!(
        output("curl -sN -H \"$K\" \"$U/v1/runs/c1/logs?follow=true"),
        "1\n2\n3\n"
    );
    assert_eq!(
        output("curl -sN -H \"$K\" \"$U/v1/runs/c2/logs?follow=true"),
        "ready\ngot SIGINT\n"
    );
}
