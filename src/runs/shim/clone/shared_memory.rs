//! The child created sharing the shim's memory, as `posix_spawn` creates
//! it: `clone3(CLONE_VM | CLONE_VFORK)`, into the run's cgroup when it has
//! one. Nothing of the shim's address space is copied at the clone and
//! nothing torn down at the exec (a forked copy costs both: a few hundred
//! microseconds of a short run's round trip), and a failed exec is told
//! through memory instead of a pipe whose close the shim would wait for.
//!
//! A child sharing memory cannot return from the system call on the
//! shim's stack (it would overwrite the frames of the suspended parent),
//! so it starts on a stack of its own and calls [`Exec::in_child`] from a
//! few instructions of assembly: the C library has no `clone3` wrapper,
//! and its `clone` cannot pass `CLONE_INTO_CGROUP`. Written for x86_64 and
//! aarch64; elsewhere [`spawn`] answers `None` and the forked child is
//! used.
//!
//! What the child may do is what a `posix_spawn` child may: async-signal-
//! safe calls on memory prepared before the clone, no allocation, no lock,
//! and no write to memory the shim reads except [`Exec`]'s failure slot.
//! Its signal handlers are its own (no `CLONE_SIGHAND`), and it starts with
//! every signal blocked until it has reset them.
//!
//! Between its change to the run's uid and its exec the child is a process
//! of the run's uid in the shim's memory. That memory is non-dumpable, so
//! no process without `CAP_SYS_PTRACE` reads it through `/proc` or ptrace
//! (`run_uids::a_run_reads_nothing_of_runs_starting_beside_it` tries,
//! while runs start). Only where `fs.suid_dumpable` is 1 (the kernel's
//! insecure debugging setting) does the uid change make it readable by
//! that uid for those microseconds, and it then holds only the run's own
//! spec.

use std::io;
use std::os::fd::RawFd;

use super::{CloneArgs, Exec, CLONE_INTO_CGROUP};

/// The child's stack: ample for `in_child` and the exec system calls.
const STACK_BYTES: usize = 128 * 1024;

/// Starts the child sharing this process's memory. `None` when this
/// architecture has no trampoline or the kernel refused the clone (the
/// caller forks instead); else the pid once the child has exec'd, or the
/// errno of its failed start (the child has been reaped).
pub(super) fn spawn(exec: &Exec, cgroup: Option<RawFd>) -> Option<io::Result<i32>> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    let stack = Stack::new().ok()?;
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: STACK_BYTES as u64,
        cgroup: cgroup.unwrap_or(0) as u64,
        ..CloneArgs::default()
    };
    exec.failed.store(0, std::sync::atomic::Ordering::SeqCst);
    let pid = with_signals_blocked(|| {
        // SAFETY: the child runs `start_child` on `stack`, which outlives
        // it (CLONE_VFORK: this thread waits until the child has exec'd or
        // exited), with `exec` borrowed for as long.
        unsafe { clone3_on_stack(&mut args, start_child, exec as *const Exec as *mut _) }
    });
    if pid < 0 {
        return None;
    }
    let pid = pid as i32;
    match exec.failed.load(std::sync::atomic::Ordering::SeqCst) {
        0 => Some(Ok(pid)),
        errno => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Some(Err(io::Error::from_raw_os_error(errno)))
        }
    }
}

/// The child's entry on its own stack.
extern "C" fn start_child(exec: *mut libc::c_void) -> ! {
    // SAFETY: `spawn` passes its `&Exec`, alive until the child execs or
    // exits (the parent is suspended until then).
    let exec = unsafe { &*(exec as *const Exec) };
    exec.in_child(None, None)
}

/// Runs `clone` with every signal blocked in this thread (the child
/// inherits the mask, so no handler of the shim's runs on its stack
/// before it has reset them), then restores the mask.
fn with_signals_blocked(clone: impl FnOnce() -> libc::c_long) -> libc::c_long {
    // SAFETY: sigfillset and pthread_sigmask on local sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = clone();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    }
}

/// A mapping for the child's stack, with a guard page below it.
struct Stack {
    mapping: *mut libc::c_void,
    /// The lowest usable byte (above the guard page).
    base: *mut u8,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let page = 4096;
        // SAFETY: a fresh private anonymous mapping, then its lowest page
        // made inaccessible.
        unsafe {
            let mapping = libc::mmap(
                std::ptr::null_mut(),
                STACK_BYTES + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if mapping == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            libc::mprotect(mapping, page, libc::PROT_NONE);
            Ok(Stack {
                mapping,
                base: mapping.cast::<u8>().add(page),
            })
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used: the child has
        // exec'd or exited.
        unsafe {
            libc::munmap(self.mapping, STACK_BYTES + 4096);
        }
    }
}

/// `clone3(args)`; the child (0 returned, on the stack `args` names) calls
/// `child(arg)`, which never returns. The parent gets the pid, or -errno.
///
/// # Safety (of each architecture's version)
/// `args` names a stack that stays mapped until the child has exec'd or
/// exited, and `child` makes only the calls a vfork child may.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &mut CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the kernel starts the child at the next instruction with its
    // stack pointer at the top of the new stack (16-byte aligned: the call
    // leaves it as a function entry expects); r12 and r13 survive the
    // system call. The parent falls through with the pid in rax.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") child,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// On aarch64, x20 and x21 survive the system call.
#[cfg(target_arch = "aarch64")]
unsafe fn clone3_on_stack(
    args: &mut CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: as on x86_64; the new stack's top is 16-byte aligned.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x20",
            "blr x21",
            "brk #0",
            "2:",
            inlateout("x0") args as *mut CloneArgs => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x20") arg,
            in("x21") child,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere: no trampoline, refused as the kernel would refuse it.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn clone3_on_stack(
    _args: &mut CloneArgs,
    _child: extern "C" fn(*mut libc::c_void) -> !,
    _arg: *mut libc::c_void,
) -> libc::c_long {
    -(libc::ENOSYS as libc::c_long)
}
