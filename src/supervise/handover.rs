//! Credentials from the init to the daemon it (re-)executes, through an
//! inherited descriptor instead of the environment: `/proc/<pid>/environ`
//! shows the environment a process was executed with, and a run that
//! SIGKILLs the daemon could read the new one's before it hardens itself.
//!
//! The init moves the credential variables ([`CREDENTIAL_VARS`]) into a
//! memfd, wipes their values in its own exec-time environment block (so
//! its `/proc/<pid>/environ` no longer shows them) and removes them from
//! its environment; each daemon it starts inherits the memfd, named by
//! [`CREDENTIALS_FD`], and puts the variables back into its own
//! environment (heap memory, never its exec-time block) before reading
//! its configuration.
//!
//! Hand-written: a memfd, an in-place wipe of `environ` and a few lines
//! of parsing; no crate does this.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;

use zeroize::Zeroizing;

/// The variables that carry credentials: the session key (both names)
/// and the default callback token.
pub(crate) const CREDENTIAL_VARS: [&str; 3] = [
    "SESSION_API_KEY",
    "OH_SESSION_API_KEYS_0",
    "OPENHANDS_API_KEY",
];

/// The variable naming the inherited descriptor (a number, no secret).
pub(crate) const CREDENTIALS_FD: &str = "SANDBOXD_INIT_CREDENTIALS_FD";

extern "C" {
    static mut environ: *const *mut libc::c_char;
}

/// In the init, before any thread or child: moves the credential
/// variables into a memfd (`NAME\0VALUE\0` pairs) and out of this
/// process's environment and its exec-time block. `None` when none is set.
pub(crate) fn take_from_env() -> io::Result<Option<File>> {
    let mut pairs = Zeroizing::new(Vec::new());
    for name in CREDENTIAL_VARS {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        pairs.extend_from_slice(name.as_bytes());
        pairs.push(0);
        pairs.extend_from_slice(value.as_bytes());
        pairs.push(0);
        let mut value = value.into_vec();
        zeroize::Zeroize::zeroize(&mut value);
        wipe_in_place(name);
        // Single-threaded here (the init starts no thread).
        std::env::remove_var(name);
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    // SAFETY: memfd_create takes a C string and flags.
    let fd = unsafe { libc::memfd_create(c"sandboxd-credentials".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor of ours.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&pairs)?;
    Ok(Some(file))
}

/// Overwrites the value of `name` in the strings `environ` points to (at
/// first the exec-time block `/proc/<pid>/environ` shows) with zeros.
fn wipe_in_place(name: &str) {
    let prefix = format!("{name}=");
    // SAFETY: single-threaded; `environ` is a null-terminated array of
    // writable NUL-terminated strings, each written only within its length.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = CStr::from_ptr(*entry).to_bytes();
            if text.starts_with(prefix.as_bytes()) {
                let value = (*entry).add(prefix.len());
                std::ptr::write_bytes(value, 0, text.len() - prefix.len());
            }
            entry = entry.add(1);
        }
    }
}

/// In the forked daemon before exec: keeps `fd` open across the exec.
/// Async-signal-safe.
pub(crate) fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor of ours.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The descriptor's number, for [`CREDENTIALS_FD`].
pub(crate) fn number(file: &File) -> String {
    file.as_raw_fd().to_string()
}

/// In the daemon, first thing (single-threaded): puts the credentials of
/// the inherited descriptor back into the environment and closes it.
pub(crate) fn restore_into_env() {
    let Some(fd) = std::env::var_os(CREDENTIALS_FD) else {
        return;
    };
    std::env::remove_var(CREDENTIALS_FD);
    let Some(fd) = fd.to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
        return;
    };
    // SAFETY: the init handed this descriptor over for us alone.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut bytes = Zeroizing::new(vec![0u8; 64 * 1024]);
    let Ok(len) = file.read_at(&mut bytes, 0) else {
        return;
    };
    let mut fields = bytes[..len].split(|b| *b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let name = OsStr::from_bytes(name);
        if CREDENTIAL_VARS
            .iter()
            .any(|known| OsStr::new(known) == name)
        {
            std::env::set_var(name, OsStr::from_bytes(value));
        }
    }
}
