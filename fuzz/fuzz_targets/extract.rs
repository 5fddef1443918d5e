//! Bundle extraction: arbitrary bytes (plain, gzip or zstd tar, picked by
//! the first bytes as for an upload) into a fresh directory through the
//! extractor's synchronous entry point, with small limits. Never panics,
//! and never writes outside its directory:
//! - the parent of the extraction dir holds, after every input, exactly
//!   the extraction dir and a sentinel file with its content unchanged;
//! - on success, the tree holds only directories, regular files and
//!   symlinks; no file has a setuid, setgid or sticky bit; and every
//!   symlink, resolved through the real tree as the kernel would, stays
//!   inside the extraction dir.

#![no_main]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandboxd::config::UploadLimits;

const SENTINEL: &[u8] = b"the parent of the extraction dir";

/// Small limits keep each input cheap (the limits themselves are checked
/// by the integration tests at their real sizes).
const LIMITS: UploadLimits = UploadLimits {
    max_bundle_bytes: 1 << 20,
    max_extracted_bytes: 256 << 10,
    max_entries: 512,
};

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        // In memory when the machine has /dev/shm: every input writes files.
        let shm = std::path::Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sandboxd-fuzz-extract-")
            .tempdir_in(parent)
            .expect("a temp dir");
        fs::write(dir.path().join("sentinel"), SENTINEL).unwrap();
        dir
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let root = base.join("root");
    fs::create_dir(&root).expect("a fresh extraction dir");
    let result = sandboxd::upload::extract_sync(data, &root, &LIMITS);

    let mut names: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["root", "sentinel"], "written outside: {result:?}");
    let sentinel = fs::symlink_metadata(base.join("sentinel")).unwrap();
    assert!(sentinel.file_type().is_file());
    assert_eq!(fs::read(base.join("sentinel")).unwrap(), SENTINEL);

    if let Ok(summary) = result {
        assert!(summary.entries <= LIMITS.max_entries);
        assert!(summary.bytes <= LIMITS.max_extracted_bytes);
        check_tree(&root, &root);
    }
    // Made writable first: an archive may leave read-only directories.
    make_writable(&root);
    fs::remove_dir_all(&root).expect("the extraction dir can be removed");
});

fn check_tree(root: &Path, dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        if kind.is_symlink() {
            let relative = path.strip_prefix(root).unwrap();
            assert!(
                resolves_inside(root, relative),
                "the symlink {} leaves the extraction dir",
                relative.display()
            );
        } else if kind.is_dir() {
            check_tree(root, &path);
        } else {
            assert!(kind.is_file(), "{}: not a file, dir or symlink", path.display());
            assert_eq!(meta.permissions().mode() & 0o7000, 0, "{}", path.display());
        }
    }
}

/// Resolves `link` (relative to `root`) through the real tree, following
/// symlinks like the kernel, with `root` as the top: false when the walk
/// climbs above `root` or meets an absolute target. A loop (more than 40
/// links) cannot leave the tree and counts as inside.
fn resolves_inside(root: &Path, link: &Path) -> bool {
    let mut stack: Vec<PathBuf> = Vec::new();
    let mut queue: Vec<PathBuf> = link
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut followed = 0;
    while let Some(part) = queue.pop() {
        match Path::new(&part).components().next() {
            Some(Component::ParentDir) => {
                if stack.pop().is_none() {
                    return false;
                }
                continue;
            }
            Some(Component::CurDir) | None => continue,
            Some(Component::RootDir) | Some(Component::Prefix(_)) => return false,
            Some(Component::Normal(_)) => {}
        }
        stack.push(part);
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>());
        let Ok(meta) = fs::symlink_metadata(&here) else {
            continue; // Nothing there: the rest is a plain name.
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        followed += 1;
        if followed > 40 {
            return true;
        }
        let target = fs::read_link(&here).unwrap();
        if target.is_absolute() {
            return false;
        }
        stack.pop();
        for component in target.components().rev() {
            queue.push(PathBuf::from(component.as_os_str()));
        }
    }
    true
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}
