//! Packaging: the Dockerfile fragment an image builder pastes in.

use serde_json::Value;

const INSTRUCTIONS: [&str; 12] = [
    "FROM",
    "RUN",
    "COPY",
    "ENV",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
    "WORKDIR",
    "USER",
    "ARG",
    "LABEL",
    "HEALTHCHECK",
];

/// Joins continuation lines and drops comments: one entry per instruction.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        current.push_str(trimmed.trim_end_matches('\\'));
        current.push(' ');
        if !trimmed.ends_with('\\') {
            let (keyword, rest) = current
                .trim()
                .split_once(' ')
                .unwrap_or((current.trim(), ""));
            out.push((keyword.to_owned(), rest.trim().to_owned()));
            current.clear();
        }
    }
    assert!(
        current.is_empty(),
        "the fragment ends inside a continued line"
    );
    out
}

/// The fragment is well-formed: known instructions, a static build, the
/// binary copied to /usr/local/bin, sandboxd as the entrypoint with the
/// agent-server as CMD.
#[test]
fn dockerfile_fragment_is_well_formed() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile.fragment"))
        .unwrap();
    let parsed = instructions(&text);
    for (keyword, _) in &parsed {
        assert!(
            INSTRUCTIONS.contains(&keyword.as_str()),
            "unknown instruction {keyword}"
        );
    }
    let find = |keyword: &str| {
        parsed
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let build = find("RUN").join(" ");
    assert!(
        build.contains("+crt-static") && build.contains("cargo build --release --locked"),
        "{build}"
    );
    let stages: Vec<String> = find("FROM");
    assert!(stages.iter().any(|s| s.ends_with("AS sandboxd-build")));
    // Both executables, side by side: the daemon finds its shim beside it.
    assert!(find("COPY").iter().any(|c| {
        c.starts_with("--from=sandboxd-build")
            && c.contains("/out/sandboxd ")
            && c.contains("/out/sandboxd-shim ")
            && c.ends_with(" /usr/local/bin/")
    }));
    assert!(build.contains("release/sandboxd-shim"), "{build}");
    let entrypoint: Value = serde_json::from_str(&find("ENTRYPOINT")[0]).unwrap();
    assert_eq!(
        entrypoint,
        serde_json::json!(["/usr/local/bin/sandboxd", "serve", "--"])
    );
    let cmd: Value = serde_json::from_str(&find("CMD")[0]).unwrap();
    assert_eq!(cmd[0], "python");
    assert!(cmd
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "openhands.agent_server"));
    assert_eq!(find("EXPOSE"), ["60001"]);
    let env = find("ENV").join(" ");
    assert!(env.contains("SANDBOXD_LISTEN=0.0.0.0:60001"), "{env}");
}
