//! The three ways of creating a phase's process, each tried.

use super::*;
use crate::containment::RunCgroup;
use std::io::Read;

/// Runs `argv` through [`Exec`] with its stdout piped here, in
/// `cgroup`; its exit code and stdout.
fn run(argv: &[&str], cgroup: Option<&RunCgroup>, create: Create) -> io::Result<(i32, String)> {
    run_as(argv, cgroup, create, None)
}

/// Every way a child can be created.
const ALL_WAYS: [Create; 3] = [Create::Shared, Create::Clone3, Create::Fork];

fn run_in(argv: &[&str], path: &str, create: Create) -> io::Result<(i32, String)> {
    run_with(argv, path, None, create, None)
}

fn run_as(
    argv: &[&str],
    cgroup: Option<&RunCgroup>,
    create: Create,
    user: Option<RunAs>,
) -> io::Result<(i32, String)> {
    run_with(argv, "/usr/bin:/bin", cgroup, create, user)
}

fn run_with(
    argv: &[&str],
    path: &str,
    cgroup: Option<&RunCgroup>,
    create: Create,
    user: Option<RunAs>,
) -> io::Result<(i32, String)> {
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let stdio = [null.as_raw_fd(), out_write.as_raw_fd(), null.as_raw_fd()];
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let env = [("PATH".to_owned(), path.to_owned())];
    let exec = Exec::new(&argv, &env, std::path::Path::new("/"), stdio, true, 0, user)?;
    let target = cgroup.map(|c| Target {
        dir: c.dir_fd(),
        procs: c.procs_fd(),
    });
    let pid = exec.spawn_with(target, create)?;
    drop(out_write);
    let mut text = String::new();
    std::fs::File::from(out_read)
        .read_to_string(&mut text)
        .unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    let code = match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    };
    Ok((code, text))
}

/// The child is in the run's cgroup when its program starts, created
/// there by `clone3` or moved there by the fallback, and leads its own
/// process group.
#[test]
fn the_child_starts_in_the_cgroup_either_way() {
    let name = format!("clone-test-{}", std::process::id());
    let Some(cgroup) = RunCgroup::create(&name) else {
        eprintln!("needs a writable cgroup v2; skipped");
        return;
    };
    for create in ALL_WAYS {
        let script = "cat /proc/self/cgroup; cut -d' ' -f5 /proc/$$/stat; echo $$";
        let (code, out) = run(&["sh", "-c", script], Some(&cgroup), create).unwrap();
        assert_eq!(code, 0, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_default();
        assert!(line.ends_with(&format!("/sandboxd-run-{name}")), "{out}");
        let numbers: Vec<&str> = out
            .lines()
            .skip(out.lines().count() - 2)
            .map(str::trim)
            .collect();
        assert_eq!(numbers[0], numbers[1], "its own process group: {out}");
    }
}

/// A program that cannot be started is an error of the spawn (the
/// errno of the failed exec), not a child that exits 127.
#[test]
fn a_failed_exec_is_reported() {
    for create in ALL_WAYS {
        let err = run(&["/nonexistent/program"], None, create).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{create:?}: {err}");
        let err = run(&["no-such-program-anywhere"], None, create).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{create:?}: {err}");
        let (code, out) = run(&["echo", "found on PATH"], None, create).unwrap();
        assert_eq!((code, out.as_str()), (0, "found on PATH\n"), "{create:?}");
    }
}

/// The program is searched in the run's PATH, as `execvp` would: past
/// a directory without it and one where it is not executable (EACCES
/// reported only when nothing else runs), and a file of no executable
/// format (a script without `#!`) runs through `/bin/sh`.
#[test]
fn the_program_is_searched_in_the_runs_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let [empty, locked, found] = ["empty", "locked", "found"].map(|d| dir.path().join(d));
    for d in [&empty, &locked, &found] {
        std::fs::create_dir(d).unwrap();
    }
    let write = |path: std::path::PathBuf, text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(locked.join("tool"), "echo locked", 0o644);
    write(found.join("tool"), "echo \"script run by sh: $1\"", 0o755);
    write(locked.join("only-locked"), "echo never", 0o644);
    let path = format!(
        "{}:{}:{}",
        empty.display(),
        locked.display(),
        found.display()
    );
    for create in ALL_WAYS {
        let (code, out) = run_in(&["tool", "arg"], &path, create).unwrap();
        assert_eq!(
            (code, out.as_str()),
            (0, "script run by sh: arg\n"),
            "{create:?}"
        );
        // No execute bit at all: refused to root too.
        let err = run_in(&["only-locked"], &path, create).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{create:?}");
    }
}

/// The child of a process with threads becomes the run user (as
/// root): the change is made for the child alone, without waiting on
/// threads the C library believes it has.
#[test]
fn the_child_becomes_the_run_user_beside_threads() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root; skipped");
        return;
    }
    let _busy = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
    let user = RunAs {
        uid: 61234,
        gid: 61234,
    };
    for create in ALL_WAYS {
        let (code, out) = run_as(&["sh", "-c", "id -u; id -G"], None, create, Some(user)).unwrap();
        assert_eq!((code, out.as_str()), (0, "61234\n61234\n"));
    }
}

extern "C" fn ignore_it(_: libc::c_int) {}

/// The child starts with every signal at its default, with none
/// blocked: one this process ignores or catches is reset.
#[test]
fn the_child_has_default_signal_dispositions() {
    // SAFETY: SIGUSR1 ignored and a no-op handler for SIGUSR2, in
    // this test process (no other test uses them).
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, ignore_it as *const () as libc::sighandler_t);
    }
    for create in ALL_WAYS {
        let (code, out) = run(&["cat", "/proc/self/status"], None, create).unwrap();
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| {
                ["SigBlk:", "SigIgn:", "SigCgt:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect();
        assert_eq!(lines.len(), 3, "{out}");
        for line in lines {
            assert!(line.ends_with("0000000000000000"), "{create:?}: {line}");
        }
    }
}

/// As root on x86_64 and aarch64, the child is created sharing memory
/// (not silently by a fallback): its start reports through memory.
#[test]
fn the_shared_memory_way_is_taken_where_it_exists() {
    if !nix::unistd::geteuid().is_root()
        || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
    {
        eprintln!("needs root on x86_64 or aarch64; skipped");
        return;
    }
    let null = std::fs::File::open("/dev/null").unwrap();
    let stdio = [null.as_raw_fd(); 3];
    let env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let argv = ["true".to_owned()];
    let exec = Exec::new(&argv, &env, std::path::Path::new("/"), stdio, true, 0, None).unwrap();
    let pid = shared_memory::spawn(&exec, None)
        .expect("clone3 with CLONE_VM taken")
        .unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
    let argv = ["/nonexistent".to_owned()];
    let exec = Exec::new(&argv, &env, std::path::Path::new("/"), stdio, true, 0, None).unwrap();
    let err = shared_memory::spawn(&exec, None).unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
