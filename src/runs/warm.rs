//! Warm shims: a few `sandboxd shim` processes started ahead of need and
//! waiting for their spec, so a new run pays for writing a spec rather
//! than for starting a process (`--warm-shims N`, 0 turns it off).
//!
//! An idle warm shim holds nothing of any run: no secret, no run dir, no
//! cgroup; it is blocked reading the first line of its spec channel. It
//! ends when that channel closes before a spec arrived: when the pool
//! drops it (shutdown), or when the daemon dies (the kernel closes the
//! daemon's end), so an idle shim never outlives its daemon. A parent-death
//! signal is deliberately not used: it would also reach a shim that has
//! already been handed a run, and runs outlive the daemon.
//!
//! A filler task keeps the pool full off the request path: it is woken when
//! a run takes a shim and starts the replacement once a run has ended (the
//! taken shim's run, usually: a short run is answered without a shim start
//! competing with it for the CPU) or [`REFILL_WAIT`] has passed, whichever
//! comes first; and it looks every few seconds for idle shims that died
//! (killed by someone) and replaces them. A run never lands on a dead
//! shim: [`WarmPool::take`] skips shims that have exited, and a spec that
//! cannot be handed over falls back to a cold start (`runs::spawn`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::spawn::{start_idle_shim, IdleShim, ShimExecutable};

/// How often the filler looks for idle shims that died.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a refill waits for a run to end after a shim was taken.
const REFILL_WAIT: Duration = Duration::from_millis(20);

/// The pool of idle shims; closed when dropped.
pub(super) struct WarmPool {
    inner: Arc<Inner>,
}

struct Inner {
    exe: Arc<ShimExecutable>,
    /// How many idle shims the pool keeps.
    target: usize,
    idle: Mutex<Vec<IdleShim>>,
    /// Wakes the filler (a shim was taken, or the pool closed).
    wake: Notify,
    /// Told whenever a run's end is recorded.
    ended: Arc<Notify>,
    closed: AtomicBool,
}

impl WarmPool {
    /// A pool of `target` shims of `exe`, filled in the background of the
    /// current tokio runtime (none outside one, or with `target` 0);
    /// `ended` is told whenever a run's end is recorded.
    pub(super) fn start(exe: Arc<ShimExecutable>, target: usize, ended: Arc<Notify>) -> WarmPool {
        let inner = Arc::new(Inner {
            exe,
            target,
            idle: Mutex::new(Vec::with_capacity(target)),
            wake: Notify::new(),
            ended,
            closed: AtomicBool::new(false),
        });
        if target > 0 {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(fill(Arc::downgrade(&inner)));
            }
        }
        WarmPool { inner }
    }

    /// A live idle shim, if one is ready; the filler starts its
    /// replacement.
    pub(super) fn take(&self) -> Option<IdleShim> {
        if self.inner.target == 0 {
            return None;
        }
        let taken = {
            let mut idle = self.inner.lock();
            let mut found = None;
            while let Some(mut shim) = idle.pop() {
                if shim.is_alive() {
                    found = Some(shim);
                    break;
                }
            }
            found
        };
        self.inner.wake.notify_one();
        taken
    }

    /// How many shims the pool keeps, and how many are idle now.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.inner.target, self.inner.lock().len())
    }

    /// Ends every idle shim (their channels close) and stops refilling.
    pub(super) fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.lock().clear();
        self.inner.wake.notify_one();
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleShim>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops idle shims that have died and starts shims until the pool is
    /// full, never starting one while holding the lock.
    fn refill(&self) {
        let died = {
            let mut idle = self.lock();
            let before = idle.len();
            idle.retain_mut(IdleShim::is_alive);
            idle.len() < before
        };
        if died {
            // A shim killed while idle left its prepared cgroup behind.
            crate::containment::remove_leftover_cgroups();
        }
        while !self.closed.load(Ordering::SeqCst) && self.lock().len() < self.target {
            match start_idle_shim(self.exe.path()) {
                Ok(shim) => self.lock().push(shim),
                Err(err) => {
                    tracing::warn!("cannot start a warm shim: {err}");
                    return;
                }
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            self.lock().clear();
        }
    }
}

/// The filler: refills when woken (once a run has ended, or after
/// [`REFILL_WAIT`]) and every [`CHECK_EVERY`]; ends when the pool is
/// closed or gone.
async fn fill(pool: Weak<Inner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        // Starting a shim is a fork and exec: off the runtime's workers.
        let filling = inner.clone();
        if tokio::task::spawn_blocking(move || filling.refill())
            .await
            .is_err()
        {
            return;
        }
        // Listening for a run's end from before the wake, so the end of a
        // run quicker than this task is not missed.
        let a_run_ended = inner.ended.notified();
        tokio::pin!(a_run_ended);
        a_run_ended.as_mut().enable();
        let woken = inner.wake.notified();
        if tokio::time::timeout(CHECK_EVERY, woken).await.is_ok()
            && !inner.closed.load(Ordering::SeqCst)
        {
            let _ = tokio::time::timeout(REFILL_WAIT, a_run_ended).await;
        }
    }
}
