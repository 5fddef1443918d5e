//! docs/API.md against the daemon: every route of `GET /openapi.json` has
//! its section with a curl example, no section names a route that does not
//! exist, and every wire error code of src/error.rs is listed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::support::TestDaemon;

fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `### \`METHOD /path\`` headings of docs/API.md, with the text of
/// each section.
fn documented_routes(doc: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    let mut sections = doc.split("\n### ").skip(1);
    for section in sections.by_ref() {
        let heading = section.lines().next().unwrap_or("");
        let Some(route) = heading.strip_prefix('`').and_then(|h| h.strip_suffix('`')) else {
            continue;
        };
        let body = section.split("\n## ").next().unwrap_or("");
        routes.push((route.to_owned(), body.to_owned()));
    }
    routes
}

/// Every route the live daemon lists in /openapi.json is documented in
/// docs/API.md with a curl example, and every documented route exists.
#[tokio::test]
async fn every_route_is_documented() {
    let daemon = TestDaemon::start().await;
    let openapi: Value = reqwest::get(format!("{}/openapi.json", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut served = BTreeSet::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                served.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(served.len() >= 16, "{served:?}");
    let doc = read("docs/API.md");
    let documented = documented_routes(&doc);
    let names: BTreeSet<String> = documented.iter().map(|(r, _)| r.clone()).collect();
    let missing: Vec<_> = served.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "docs/API.md lacks a section for {missing:?}"
    );
    let stale: Vec<_> = names.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "docs/API.md documents routes the daemon lacks: {stale:?}"
    );
    for (route, body) in &documented {
        assert!(
            body.contains("curl "),
            "the section of {route} has no curl example"
        );
    }
}

/// Every wire error code that src/error.rs can answer is in the error
/// table of docs/API.md.
#[test]
fn every_error_code_is_documented() {
    let source = read("src/error.rs");
    let doc = read("docs/API.md");
    let mut codes = BTreeSet::new();
    for line in source.lines().filter(|l| l.contains("StatusCode::")) {
        // `(StatusCode::NOT_FOUND, "run_not_found")`
        let Some((_, rest)) = line.split_once(", \"") else {
            continue;
        };
        if let Some((code, _)) = rest.split_once('"') {
            codes.insert(code.to_owned());
        }
    }
    assert!(codes.len() >= 15, "parsed too few codes: {codes:?}");
    let missing: Vec<_> = codes
        .iter()
        .filter(|code| !doc.contains(&format!("| `{code}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md's error table lacks {missing:?}"
    );
}
