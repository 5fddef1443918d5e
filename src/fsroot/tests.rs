//! Resolution beneath a root, with `openat2` and with the fallback walk.

use std::os::fd::AsFd;

use super::*;

type Opener = fn(BorrowedFd<'_>, &Path, OFlag, Mode) -> Result<OwnedFd, Errno>;

const OPENERS: [(&str, Opener); 2] = [("openat2", open_beneath), ("walk", walk_beneath)];

fn tree() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/b/f.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("outside.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink("../..", root.join("a/up")).unwrap();
    std::os::unix::fs::symlink("b", root.join("a/inside")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("abs")).unwrap();
    let opened = Root::open(&root).unwrap();
    (dir, opened)
}

/// Plain paths open; any symlink on the way (even one staying inside)
/// and any `..` are refused, with both resolvers.
#[test]
fn symlinks_are_never_followed() {
    let (_dir, root) = tree();
    let read = OFlag::O_RDONLY;
    for (name, open) in OPENERS {
        assert!(
            open(root.fd(), Path::new("a/b/f.txt"), read, Mode::empty()).is_ok(),
            "{name}"
        );
        assert!(
            open(root.fd(), Path::new(""), read, Mode::empty()).is_ok(),
            "{name}"
        );
        for bad in [
            "a/up/outside.txt",
            "a/inside/f.txt",
            "abs",
            "a/inside",
            "../outside.txt",
        ] {
            let res = open(root.fd(), Path::new(bad), read, Mode::empty());
            assert!(res.is_err(), "{name}: {bad} opened");
        }
    }
}

/// Kernel file systems are never served: by name, and by type when a
/// root reaches one.
#[test]
fn kernel_dirs_are_refused() {
    let roots = Roots::open(&[PathBuf::from("/")]);
    assert!(roots.locate(Path::new("/proc/self/environ")).is_none());
    assert!(roots.locate(Path::new("/sys/kernel")).is_none());
    assert!(roots.locate(Path::new("/dev/null")).is_none());
    assert!(roots.locate(Path::new("/proc")).is_none());
    assert!(roots.locate(Path::new("/etc/hostname")).is_some());
    let proc_root = Root::open(Path::new("/proc")).unwrap();
    let res = open_beneath(
        proc_root.fd(),
        Path::new("sys"),
        OFlag::O_RDONLY,
        Mode::empty(),
    );
    assert!(res.is_err(), "procfs opened");
}

/// The deepest root wins; paths outside every root have none.
#[test]
fn locate_picks_the_deepest_root() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let roots = Roots::open(&[
        dir.path().to_owned(),
        inner.clone(),
        dir.path().join("missing"),
    ]);
    let (root, rel) = roots.locate(&inner.join("x/y")).unwrap();
    assert_eq!(root.path(), inner);
    assert_eq!(rel, Path::new("x/y"));
    let (root, rel) = roots.locate(&dir.path().join("z")).unwrap();
    assert_eq!(root.path(), dir.path());
    assert_eq!(rel, Path::new("z"));
    assert!(roots.locate(Path::new("/etc/passwd")).is_none());
    assert!(roots.describe().contains("missing"));
}

/// Absolute and relative paths are normalized; `..` is refused.
#[test]
fn paths_are_parsed() {
    assert_eq!(
        parse_absolute("/tmp/./a//b").unwrap(),
        Path::new("/tmp/a/b")
    );
    assert_eq!(
        parse_relative("./out/x.txt").unwrap(),
        Path::new("out/x.txt")
    );
    assert_eq!(parse_relative("").unwrap(), Path::new(""));
    for bad in ["tmp/x", "/tmp/../etc", "/a\0b"] {
        assert!(parse_absolute(bad).is_err(), "{bad}");
    }
    for bad in ["/abs", "a/../../x"] {
        assert!(parse_relative(bad).is_err(), "{bad}");
    }
}

/// A tree is removed through the descriptor; a symlink in it is removed,
/// not followed.
#[test]
fn trees_are_removed_without_following_links() {
    let (dir, root) = tree();
    remove_tree_at(root.fd().as_fd(), OsStr::new("a")).unwrap();
    remove_tree_at(root.fd(), OsStr::new("abs")).unwrap();
    remove_tree_at(root.fd(), OsStr::new("gone")).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("outside.txt")).unwrap(),
        b"secret"
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}
