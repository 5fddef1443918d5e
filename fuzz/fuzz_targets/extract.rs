//! Arbitrary bytes into the bundle extractor: it must never panic, never
//! write outside its destination, and leave nothing there that a bundle
//! may not hold (absolute or escaping symlinks, devices, FIFOs, setuid).
//!
//! The destination sits three levels deep in a fresh temp dir, so a write
//! through `..` (up to three levels) would show up beside it.

#![no_main]

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sandboxd::config::UploadLimits;

const LIMITS: UploadLimits = UploadLimits {
    max_bundle_bytes: 1 << 20,
    max_extracted_bytes: 8 << 20,
    max_entries: 512,
};

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("a/b/dest");
    fs::create_dir_all(&dest).unwrap();
    let _ = sandboxd::upload::extract_sync(data, &dest, &LIMITS);

    for (dir, only) in [
        (outer.path(), "a"),
        (&outer.path().join("a"), "b"),
        (&outer.path().join("a/b"), "dest"),
    ] {
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [only],
            "something was written beside the destination"
        );
    }
    let root = fs::canonicalize(&dest).unwrap();
    check_tree(&dest, &root);
});

fn check_tree(dir: &Path, root: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        assert!(
            !(kind.is_block_device()
                || kind.is_char_device()
                || kind.is_fifo()
                || kind.is_socket()),
            "special file {path:?}"
        );
        assert_eq!(
            meta.permissions().mode() & 0o7000,
            0,
            "setuid/setgid/sticky on {path:?}"
        );
        if kind.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            assert!(
                target.is_relative(),
                "absolute symlink {path:?} -> {target:?}"
            );
            if let Ok(real) = fs::canonicalize(&path) {
                assert!(real.starts_with(root), "{path:?} resolves to {real:?}");
            }
        } else if kind.is_dir() {
            check_tree(&path, root);
        }
    }
}
