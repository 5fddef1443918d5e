//! The phase queue's bounds and its life on disk.

use super::*;

fn target() -> CallbackTarget {
    CallbackTarget {
        url: "http://127.0.0.1:1/runs/svc/complete".into(),
        token: Some(StoredToken::from("sk-phase")),
        run_id: "svc".into(),
        phases: true,
    }
}

fn names(phases: &Phases, run_id: &str) -> Vec<String> {
    phases.lock()[run_id]
        .pending
        .iter()
        .map(|p| p.phase.clone())
        .collect()
}

/// Past the cap the newest replaces the last waiting; the front (which
/// may be in flight) and the order stay.
#[test]
fn a_full_queue_keeps_its_front_and_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let phases = Phases::load(dir.path().to_owned()).unwrap();
    let url = || "http://127.0.0.1:1/runs/svc/phase".to_owned();
    assert_eq!(phases.push("r1", &target(), url(), "p0".into()), (true, 1));
    for n in 1..MAX_PENDING + 5 {
        assert!(!phases.push("r1", &target(), url(), format!("p{n}")).0);
    }
    let got = names(&phases, "r1");
    assert_eq!(got.len(), MAX_PENDING);
    assert_eq!(got[0], "p0");
    assert_eq!(got[MAX_PENDING - 2], format!("p{}", MAX_PENDING - 2));
    assert_eq!(got[MAX_PENDING - 1], format!("p{}", MAX_PENDING + 4));
    assert_eq!(phases.lock()["r1"].superseded, 5);
}

/// A queue written to disk is resumed by the next start (0600, with its
/// order); an emptied queue's file goes; leftovers of other versions
/// or with nothing pending are cleared, unreadable ones left alone.
#[test]
fn queues_survive_a_restart_and_empty_ones_go() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let phases = Phases::load(dir.path().to_owned()).unwrap();
    let url = "http://127.0.0.1:1/runs/svc/phase".to_owned();
    phases.push("r1", &target(), url.clone(), "one".into());
    phases.push("r1", &target(), url.clone(), "two".into());
    phases.push("r2", &target(), url, "only".into());
    for run_id in ["r1", "r2"] {
        phases
            .sync_file(run_id, durable::Durability::Flush)
            .unwrap();
    }
    let mode = std::fs::metadata(phases.path("r1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    phases.forget("r2");
    assert!(!phases.path("r2").exists());
    std::fs::write(dir.path().join("bad.phases"), b"{").unwrap();
    let empty = r#"{"version":1,"run_id":"r3","url":"u","token":null,"pending":[]}"#;
    std::fs::write(dir.path().join("r3.phases"), empty).unwrap();

    let again = Phases::load(dir.path().to_owned()).unwrap();
    assert_eq!(again.run_ids(), ["r1"]);
    assert_eq!(names(&again, "r1"), ["one", "two"]);
    assert!(again.pending("r1") && !again.pending("r2"));
    assert!(!dir.path().join("r3.phases").exists());
    assert!(dir.path().join("bad.phases").exists());
}

/// One flush covers every phase taken before it: a caller whose phase a
/// later write already holds returns without writing.
#[test]
fn one_flush_covers_the_phases_taken_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let phases = Phases::load(dir.path().to_owned()).unwrap();
    let url = "http://127.0.0.1:1/runs/svc/phase".to_owned();
    let taken: Vec<u64> = ["a", "b", "c"]
        .into_iter()
        .map(|p| phases.push("r1", &target(), url.clone(), p.into()).1)
        .collect();
    assert_eq!(taken, [1, 2, 3]);
    phases.flush_through("r1", 3).unwrap();
    let stored: PhaseQueue =
        serde_json::from_slice(&std::fs::read(phases.path("r1")).unwrap()).unwrap();
    assert_eq!(stored.pending.len(), 3);
    std::fs::remove_file(phases.path("r1")).unwrap();
    phases.flush_through("r1", 1).unwrap();
    phases.flush_through("r1", 2).unwrap();
    assert!(
        !phases.path("r1").exists(),
        "no second write for phases already flushed"
    );
    phases.push("r1", &target(), url, "d".into());
    phases.flush_through("r1", 4).unwrap();
    assert!(phases.path("r1").exists());
}
