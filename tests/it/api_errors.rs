//! API error messages a newcomer meets first: they name the field and give
//! an example, never serde's internals; `timeout_s` takes the same
//! durations as the CLI.

use serde_json::json;

use crate::support::TestDaemon;

/// `{"command": 42}` names `command` and shows both accepted forms.
#[tokio::test]
async fn a_bad_command_names_the_field_with_an_example() {
    let daemon = TestDaemon::start().await;
    for command in [json!(42), json!(["ls", 1]), json!({"argv": ["ls"]})] {
        let (status, body) = daemon.post("/v1/runs", json!({ "command": command })).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "bad_json", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("command must be") && message.contains("[\"python3\", \"main.py\"]"),
            "{message}"
        );
        assert!(
            !message.contains("untagged") && !message.contains("variant"),
            "{message}"
        );
    }
}

/// `"timeout_s": "5m"` is five minutes; a string that is no duration, or
/// another type, names the field with examples.
#[tokio::test]
async fn timeout_s_takes_human_durations() {
    let daemon = TestDaemon::start().await;
    let (status, body) = daemon
        .post(
            "/v1/runs",
            json!({"command": ["true"], "timeout_s": "5m", "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timeout_s"], 300.0, "{body}");
    for timeout in [json!("soon"), json!(true)] {
        let (status, body) = daemon
            .post(
                "/v1/runs",
                json!({"command": ["true"], "timeout_s": timeout}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("timeout_s") && message.contains("\"5m\""),
            "{message}"
        );
        assert!(!message.contains("f64"), "{message}");
    }
}
