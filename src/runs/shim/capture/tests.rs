use super::*;

/// Index records are the stream's tag and the little-endian length,
/// the format `runs::logs` reads back.
#[test]
fn index_records() {
    let cases = [
        (Stream::Stdout, 1, [1, 1, 0, 0, 0]),
        (Stream::Stderr, 5, [2, 5, 0, 0, 0]),
        (Stream::Stdout, 0x0102_0304, [1, 4, 3, 2, 1]),
        (Stream::Stderr, READ_CHUNK + 64, [2, 0x40, 0, 4, 0]),
    ];
    for (stream, stored, want) in cases {
        assert_eq!(index_record(stream, stored), want, "{stored}");
    }
}

/// The ring keeps exactly the last `capacity` bytes pushed, whatever
/// the sizes of the pushes.
#[test]
fn tail_ring_keeps_the_last_bytes() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for capacity in [0, 1, 7, 64, 999, 1000, 1001] {
        for step in [1, 3, 64, 500, 1000] {
            let mut ring = TailRing::new(capacity);
            for chunk in data.chunks(step) {
                ring.push(chunk);
            }
            let kept = ring.contents().concat();
            let want = &data[data.len().saturating_sub(capacity)..];
            assert_eq!(kept, want, "capacity {capacity}, step {step}");
            assert_eq!(ring.dropped(), (data.len() - want.len()) as u64);
        }
    }
}

fn files(dir: &Path, cap: u64) -> OutputFiles {
    OutputFiles::new(dir, cap, EventPipe::closed())
}

/// Past the cap, the log holds the head, a marker and the tail, the
/// index covers every stored byte in order, and the drop is counted.
#[test]
fn capped_stream_keeps_head_marker_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = files(dir.path(), 100);
    let data: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for chunk in data.chunks(37) {
        out.store_bytes(Stream::Stdout, chunk);
    }
    out.store_bytes(Stream::Stderr, b"err");
    let truncation = out.finish();
    // tail = 100/4 = 25, head = 75.
    assert_eq!(truncation.stdout_dropped, 900);
    assert_eq!(truncation.stderr_dropped, 0);
    let reason = truncation.reason.unwrap();
    assert!(
        reason.contains("stdout: over the output cap of 100 bytes"),
        "{reason}"
    );
    let log = std::fs::read(RunDir::new(dir.path()).stdout_log()).unwrap();
    let marker = "\n[sandboxd: 900 bytes of stdout dropped (over the output cap of 100 bytes)]\n";
    let want = [&data[..75], marker.as_bytes(), &data[975..]].concat();
    assert_eq!(
        String::from_utf8_lossy(&log),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(out.stdout_bytes(), want.len() as u64);
    assert_eq!(
        std::fs::read(RunDir::new(dir.path()).stderr_log()).unwrap(),
        b"err"
    );
    let index = std::fs::read(RunDir::new(dir.path()).output_index()).unwrap();
    let mut per_stream = [0u64; 2];
    for record in index.chunks(5) {
        let len = u32::from_le_bytes(record[1..5].try_into().unwrap());
        per_stream[usize::from(record[0] - 1)] += u64::from(len);
    }
    assert_eq!(per_stream, [want.len() as u64, 3]);
}

/// Under the cap nothing changes: no marker, nothing dropped; output
/// that fits the head and the tail together is kept whole.
#[test]
fn under_the_cap_everything_is_kept() {
    for (cap, len) in [(0, 5000), (100, 100), (100, 60), (1 << 20, 5000)] {
        let dir = tempfile::tempdir().unwrap();
        let mut out = files(dir.path(), cap);
        let data = vec![b'x'; len];
        for chunk in data.chunks(9) {
            out.store_bytes(Stream::Stdout, chunk);
        }
        assert_eq!(out.finish(), Truncation::default(), "{cap} {len}");
        let log = std::fs::read(RunDir::new(dir.path()).stdout_log()).unwrap();
        assert_eq!(log.len(), len, "{cap} {len}");
    }
}

/// A run without output creates no file.
#[test]
fn no_output_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = files(dir.path(), 100);
    out.store_bytes(Stream::Stdout, b"");
    assert_eq!(out.finish(), Truncation::default());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
