//! Warm shims: a few `sandboxd shim` processes made ahead of need and
//! waiting for their spec, so a new run pays for writing a spec rather
//! than for starting a process (`--warm-shims N`, 0 turns it off). They
//! are forked by the pool's shim template (`runs::template`), started
//! with the pool's first shim; without one they are started as a cold
//! shim is.
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
//! a run takes a shim and starts the replacement once a run's end is
//! recorded (the taken shim's run, usually; that notice comes after the
//! run's answer has gone out, so a short run is answered without a shim
//! start competing with it for the CPU) or once [`REFILL_WAIT`] has
//! passed, whichever comes first; and it looks every
//! few seconds for idle shims that died (killed by someone) and replaces
//! them. A run never lands on a dead
//! shim: [`WarmPool::take`] skips shims that have exited, and a spec that
//! cannot be handed over falls back to a shim made for the run
//! ([`WarmPool::shim_now`]).
//!
//! A run that finds the pool empty while a replacement is owed (a caller
//! running one run after another asks for the next as the last one's
//! replacement starts) claims that replacement, hurries the filler and
//! waits for it: the start is already under way, so it is ready sooner
//! than a shim started anew, and the machine does not start two. Only as
//! many runs wait as replacements are owed; the rest of a burst gets a
//! shim made at once ([`WarmPool::shim_now`]: forked by the template, off
//! the runtime's thread, so a burst costs no exec per run either).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::spawn::{start_idle_shim, IdleShim, ShimExecutable};
use super::template::TemplateSlot;

/// How often the filler looks for idle shims that died.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a refill waits for a run to end after a shim was taken.
const REFILL_WAIT: Duration = Duration::from_millis(20);

/// How long a run waits for the replacement it claimed before it starts
/// a shim of its own: far beyond a shim's start, which takes about a
/// millisecond, so it is reached only when the start failed unseen.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// The pool of idle shims; closed when dropped.
pub(super) struct WarmPool {
    inner: Arc<Inner>,
}

struct Inner {
    exe: Arc<ShimExecutable>,
    /// How many idle shims the pool keeps.
    target: usize,
    idle: Mutex<Idle>,
    /// Forks the pool's shims (for the filler, and for runs beyond the
    /// pool); started on the first refill, and again after it died.
    template: Mutex<TemplateSlot>,
    /// One run at a time asks the template for a shim of its own (forks
    /// are one after another anyway): a burst waits here, not in as many
    /// blocking threads.
    forking: tokio::sync::Mutex<()>,
    /// Wakes the filler (a shim was taken, or the pool closed).
    wake: Notify,
    /// Tells the filler a run waits for its next shim: start it now.
    hurry: Notify,
    /// Told when the filler has added a shim or given up on one.
    added: Notify,
    /// Told whenever a run's end is recorded.
    ended: Arc<Notify>,
    closed: AtomicBool,
}

/// The idle shims, oldest first (the likeliest to be done starting), and
/// how many runs wait for one.
#[derive(Default)]
struct Idle {
    shims: VecDeque<IdleShim>,
    claimed: usize,
}

impl WarmPool {
    /// A pool of `target` shims of `exe`, filled in the background of the
    /// current tokio runtime (none outside one, or with `target` 0);
    /// `ended` is told whenever a run's end is recorded.
    pub(super) fn start(exe: Arc<ShimExecutable>, target: usize, ended: Arc<Notify>) -> WarmPool {
        let inner = Arc::new(Inner {
            exe,
            target,
            idle: Mutex::new(Idle::default()),
            template: Mutex::new(TemplateSlot::default()),
            forking: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            hurry: Notify::new(),
            added: Notify::new(),
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

    /// A live idle shim: one that is ready, or the replacement already
    /// owed to the pool when no run waits for it yet; `None` when the run
    /// should start a shim of its own. The filler starts the replacement.
    pub(super) async fn take(&self) -> Option<IdleShim> {
        if self.inner.target == 0 {
            return None;
        }
        let added = self.inner.added.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        let claim = {
            let mut idle = self.inner.lock();
            if let Some(shim) = idle.take_unclaimed() {
                drop(idle);
                self.inner.wake.notify_one();
                return Some(shim);
            }
            // Every shim the pool lacks is owed: the filler starts it.
            let owed = self.inner.target - idle.shims.len();
            let claim = idle.claimed < owed && !self.inner.closed.load(Ordering::SeqCst);
            idle.claimed += usize::from(claim);
            claim.then(|| Claim(&self.inner))
        };
        self.inner.wake.notify_one();
        let claim = claim?;
        self.inner.hurry.notify_one();
        let _ = tokio::time::timeout(CLAIM_WAIT, added).await;
        let taken = claim.redeem();
        self.inner.wake.notify_one();
        taken
    }

    /// A shim made now, for a run that found no idle one (a burst beyond
    /// the pool): forked by the pool's template, off the runtime's thread,
    /// where the pool has one; else started (`--warm-shims 0`, or a
    /// template that failed).
    pub(super) async fn shim_now(&self) -> Result<IdleShim, String> {
        if self.inner.target == 0 {
            return start_idle_shim(&self.inner.exe);
        }
        let _turn = self.inner.forking.lock().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.new_shim())
            .await
            .map_err(|e| format!("cannot make the run's shim: {e}"))?
    }

    /// How many shims the pool keeps, and how many are idle now.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.inner.target, self.inner.lock().shims.len())
    }

    /// Ends every idle shim (their channels close) and stops refilling.
    pub(super) fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.lock().shims.clear();
        self.inner.end_template();
        self.inner.wake.notify_one();
        self.inner.added.notify_waiters();
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.close();
    }
}

/// A run's claim on a shim the pool is owed. Given back when dropped, so
/// a request abandoned while it waits (its client went away) leaves no
/// claim behind: one left would hold back a shim from every later run.
struct Claim<'a>(&'a Inner);

impl Claim<'_> {
    /// The claimed shim, if it has come.
    fn redeem(self) -> Option<IdleShim> {
        let mut idle = self.0.lock();
        idle.claimed -= 1;
        std::mem::forget(self);
        idle.take_unclaimed()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.lock().claimed -= 1;
    }
}

impl Idle {
    /// The oldest live shim beyond those the waiting runs will take.
    fn take_unclaimed(&mut self) -> Option<IdleShim> {
        while self.shims.len() > self.claimed {
            let mut shim = self.shims.pop_front()?;
            if shim.is_alive() {
                return Some(shim);
            }
        }
        None
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops idle shims that have died and starts shims until the pool is
    /// full, never starting one while holding the lock.
    fn refill(&self) {
        let died = {
            let mut idle = self.lock();
            let before = idle.shims.len();
            idle.shims.retain_mut(IdleShim::is_alive);
            idle.shims.len() < before
        };
        if died {
            // A shim killed while idle left its prepared cgroup behind.
            crate::containment::remove_leftover_cgroups();
        }
        // A template that died is reaped here, and started again when a
        // shim is next needed.
        self.template().reap_if_dead();
        while !self.closed.load(Ordering::SeqCst) && self.lock().shims.len() < self.target {
            let started = self.new_shim();
            let failed = started.as_ref().err().cloned();
            if let Ok(shim) = started {
                self.lock().shims.push_back(shim);
            }
            // A waiting run takes the shim, or starts its own at once.
            self.added.notify_waiters();
            if let Some(err) = failed {
                tracing::warn!("cannot start a warm shim: {err}");
                return;
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            self.lock().shims.clear();
            self.end_template();
        }
    }

    /// A new idle shim: forked by the template, else started.
    fn new_shim(&self) -> Result<IdleShim, String> {
        let forked = self.template().fork_shim(&self.exe);
        match forked {
            Some(shim) => Ok(shim),
            None => start_idle_shim(&self.exe),
        }
    }

    fn template(&self) -> std::sync::MutexGuard<'_, TemplateSlot> {
        self.template.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the template (its channel closes).
    fn end_template(&self) {
        self.template().end();
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
        // Starting a shim is a fork and exec: off the runtime's thread.
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
            // A run waiting for its shim cuts the wait short.
            let hurried = inner.hurry.notified();
            tokio::pin!(hurried);
            // A run's end is recorded after its answer has gone out (or,
            // for a durable run, after the answer's task was woken on
            // the one runtime thread).
            tokio::select! {
                _ = a_run_ended => {}
                _ = &mut hurried => {}
                _ = tokio::time::sleep(REFILL_WAIT) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::shim::protocol::ShimExe;
    use std::os::unix::fs::PermissionsExt;

    /// A pool of one shim whose executable waits for its spec channel to
    /// close, as a shim does while idle.
    fn pool_of_one(dir: &std::path::Path) -> WarmPool {
        let exe = dir.join("idle-shim");
        std::fs::write(&exe, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = Arc::new(ShimExecutable::new(ShimExe::Exactly(exe)));
        WarmPool::start(exe, 1, Arc::new(Notify::new()))
    }

    async fn until_ready(pool: &WarmPool) {
        for _ in 0..500 {
            if pool.counts().1 == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool never filled");
    }

    /// Runs `body` on a runtime of its own thread and fails if it has not
    /// ended within 60 s: a lock taken twice would hang the test instead.
    fn within_a_minute(body: impl std::future::Future<Output = ()> + Send + 'static) {
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(body);
            let _ = done.send(());
        });
        match ended.recv_timeout(Duration::from_secs(60)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung: a deadlock"),
            Err(_) => panic!("the test's body panicked"),
            Ok(()) => {}
        }
    }

    #[test]
    fn one_run_waits_for_the_owed_shim_and_an_abandoned_wait_gives_its_claim_back() {
        within_a_minute(takes_with_claims());
    }

    async fn takes_with_claims() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_of_one(dir.path());
        until_ready(&pool).await;
        let first = pool.take().await;
        assert!(first.is_some(), "the ready shim");
        // The pool is empty and owes one: of two runs asking at once, one
        // claims it and gets it, the other is told at once to start cold.
        let (second, third) = tokio::join!(pool.take(), pool.take());
        assert_eq!(
            (second.is_some(), third.is_some()),
            (true, false),
            "the owed shim goes to the one run that claimed it"
        );
        assert_eq!(pool.inner.lock().claimed, 0);
        // A run that stops waiting (its request dropped) takes its claim
        // back: the next shim still goes to the next run.
        let abandoned = tokio::time::timeout(Duration::ZERO, pool.take()).await;
        drop(abandoned);
        assert_eq!(pool.inner.lock().claimed, 0);
        until_ready(&pool).await;
        assert!(pool.take().await.is_some(), "no claim left behind");
    }
}
