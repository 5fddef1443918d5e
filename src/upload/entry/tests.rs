use super::*;

fn links(pairs: &[(&str, &str)]) -> Links {
    let mut links = Links::default();
    for (path, target) in pairs {
        links.insert(PathBuf::from(path), PathBuf::from(target));
    }
    links
}

/// Entry names: what is accepted and how it is normalized, what is refused.
#[test]
fn names() {
    let table: &[(&str, Result<&str, &str>)] = &[
        ("a.txt", Ok("a.txt")),
        ("./a/b", Ok("a/b")),
        ("a//b/./c/", Ok("a/b/c")),
        ("./", Ok("")),
        ("", Ok("")),
        ("a/..b/c..", Ok("a/..b/c..")),
        ("a\\b", Ok("a\\b")),
        ("/etc/passwd", Err("absolute")),
        ("//x", Err("absolute")),
        ("..", Err("`..`")),
        ("a/../b", Err("`..`")),
        ("../../tmp/evil.txt", Err("`..`")),
        ("..\\..\\Temp\\evil.txt", Err("Windows")),
        ("a/b\\..\\c", Err("Windows")),
    ];
    for (name, want) in table {
        let got = normalize(name.as_bytes());
        match want {
            Ok(path) => assert_eq!(got, Ok(PathBuf::from(path)), "{name:?}"),
            Err(part) => {
                let err = got.expect_err(name);
                assert!(err.contains(part), "{name:?}: {err}");
            }
        }
    }
    assert!(normalize(b"a\0b").is_err());
}

/// Entry types: files, dirs and links are extracted; devices, FIFOs and
/// unknown types are refused; global headers are skipped.
#[test]
fn kinds() {
    let table = [
        (EntryType::Regular, Kind::File),
        (EntryType::Continuous, Kind::File),
        (EntryType::GNUSparse, Kind::File),
        (EntryType::Directory, Kind::Dir),
        (EntryType::Symlink, Kind::Symlink),
        (EntryType::Link, Kind::Hardlink),
        (EntryType::XGlobalHeader, Kind::Skip),
    ];
    for (entry_type, kind) in table {
        assert_eq!(kind_of(entry_type), kind, "{entry_type:?}");
    }
    for entry_type in [
        EntryType::Char,
        EntryType::Block,
        EntryType::Fifo,
        EntryType::new(b'M'),
        EntryType::new(b'Z'),
    ] {
        assert!(
            matches!(kind_of(entry_type), Kind::Refused(_)),
            "{entry_type:?}"
        );
    }
}

/// Modes: setuid, setgid and sticky bits are dropped; directories keep
/// owner rwx so the tree stays removable.
#[test]
fn modes() {
    let none = Links::default();
    let file = plan(b"f", Kind::File, None, 0o104755, &none).unwrap();
    assert_eq!(
        file,
        Plan::File {
            path: "f".into(),
            mode: 0o755
        }
    );
    let file = plan(b"g", Kind::File, None, 0o6644, &none).unwrap();
    assert_eq!(
        file,
        Plan::File {
            path: "g".into(),
            mode: 0o644
        }
    );
    let dir = plan(b"d/", Kind::Dir, None, 0o41555, &none).unwrap();
    assert_eq!(
        dir,
        Plan::Dir {
            path: "d".into(),
            mode: 0o755
        }
    );
}

/// Symlinks: relative targets that stay inside are fine (also dangling
/// ones); absolute targets and targets escaping directly, through `..` or
/// through an earlier symlink of the same archive are refused.
#[test]
fn symlinks() {
    // (link path, target, earlier symlinks, Ok or a part of the reason)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Result<(), &'a str>,
    );
    let table: &[Case] = &[
        ("lnk", "file", &[], Ok(())),
        ("a/b/lnk", "../c", &[], Ok(())),
        ("a/b/lnk", "../../c", &[], Ok(())),
        ("a/lnk", "./x/./y", &[], Ok(())),
        ("lnk", ".", &[], Ok(())),
        ("lnk", "/etc/passwd", &[], Err("absolute")),
        ("lnk", "..", &[], Err("outside")),
        ("a/b/lnk", "../../../c", &[], Err("outside")),
        ("lnk", "d/../../x", &[], Err("outside")),
        // Through an earlier symlink: `up -> a/..` is the root, one more
        // `..` leaves it.
        ("evil", "up/../x", &[("up", "a/..")], Err("outside")),
        ("evil", "deep/../../x", &[("deep", ".")], Err("outside")),
        ("ok", "sub/../x", &[("sub", "a/b")], Ok(())),
        (
            "loop",
            "l1/x",
            &[("l1", "l2"), ("l2", "l1")],
            Err("too many"),
        ),
        ("x", "", &[], Err("without a target")),
    ];
    for (path, target, earlier, want) in table {
        let links = links(earlier);
        let got = plan(
            path.as_bytes(),
            Kind::Symlink,
            Some(target.as_bytes()),
            0o777,
            &links,
        );
        match want {
            Ok(()) => assert_eq!(
                got,
                Ok(Plan::Symlink {
                    path: PathBuf::from(path),
                    target: PathBuf::from(target)
                }),
                "{path} -> {target}"
            ),
            Err(part) => {
                let err = got.expect_err(path);
                assert!(err.contains(part), "{path} -> {target}: {err}");
            }
        }
    }
}

/// Nothing is written under or over a symlink of the archive.
#[test]
fn no_writes_through_symlinks() {
    let links = links(&[("dir", "real"), ("file", "other")]);
    for (name, kind) in [
        ("dir/x", Kind::File),
        ("dir/sub", Kind::Dir),
        ("dir/s", Kind::Symlink),
        ("file", Kind::File),
        ("file", Kind::Symlink),
        ("file", Kind::Dir),
    ] {
        let err = plan(name.as_bytes(), kind, Some(b"t"), 0o644, &links).unwrap_err();
        assert!(err.contains("symlink"), "{name}: {err}");
    }
    assert!(plan(b"real/x", Kind::File, None, 0o644, &links).is_ok());
}

/// Hardlinks point at earlier regular entries by their archive path, never
/// at a symlink, out of the root, or through a symlink.
#[test]
fn hardlinks() {
    let links = links(&[("s", "a"), ("dir", "sub")]);
    let ok = plan(b"h", Kind::Hardlink, Some(b"./a/f"), 0, &links).unwrap();
    assert_eq!(
        ok,
        Plan::Hardlink {
            path: "h".into(),
            target: "a/f".into()
        }
    );
    for (target, part) in [
        ("/etc/passwd", "absolute"),
        ("../x", "`..`"),
        ("s", "symlink"),
        ("dir/f", "symlink"),
        ("h", "itself"),
        ("", "itself"),
    ] {
        let err = plan(b"h", Kind::Hardlink, Some(target.as_bytes()), 0, &links).unwrap_err();
        assert!(err.contains(part), "{target}: {err}");
    }
}

/// The root itself: `./` is skipped, anything else naming it is refused.
#[test]
fn root_entries() {
    let none = Links::default();
    assert_eq!(plan(b"./", Kind::Dir, None, 0o755, &none), Ok(Plan::Skip));
    assert_eq!(plan(b"", Kind::Dir, None, 0o755, &none), Ok(Plan::Skip));
    assert!(plan(b".", Kind::File, None, 0o644, &none).is_err());
    assert!(plan(b"./", Kind::Symlink, Some(b"x"), 0o777, &none).is_err());
}

/// A symlink that was safe when written can become unsafe through a later
/// one; the final recheck catches it.
#[test]
fn recheck_after_all_entries() {
    let mut links = Links::default();
    let first = plan(b"s", Kind::Symlink, Some(b"d/../x"), 0o777, &links).unwrap();
    let Plan::Symlink { path, target } = first else {
        panic!("{first:?}")
    };
    links.insert(path, target);
    let second = plan(b"d", Kind::Symlink, Some(b"."), 0o777, &links).unwrap();
    let Plan::Symlink { path, target } = second else {
        panic!("{second:?}")
    };
    links.insert(path, target);
    let (path, reason) = links.recheck().unwrap_err();
    assert_eq!(path, PathBuf::from("s"));
    assert!(reason.contains("outside"), "{reason}");
}
