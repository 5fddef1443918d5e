//! The signals sandboxd passes on, defined once for the three places that
//! forward them: the init (to the daemon), the daemon (to the supervised
//! service) and each run's shim (to the run's current process group).

use nix::sys::signal::Signal;

/// Signals forwarded to the process (group) a forwarder stands in front
/// of. These six are the ones a user or an orchestrator sends to ask
/// something of a program: stop (SIGTERM, SIGINT, SIGQUIT), reload
/// (SIGHUP) or an application-defined action (SIGUSR1, SIGUSR2). SIGKILL
/// and SIGSTOP cannot be caught; job-control and fault signals are about
/// the forwarder itself.
pub(crate) const FORWARDED_SIGNALS: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Whether a forwarded signal also asks the forwarder itself to stop
/// (SIGTERM, SIGINT): the daemon shuts down instead of passing it on to the
/// service, and a shim marks its run cancelled.
pub(crate) fn asks_to_stop(signal: Signal) -> bool {
    matches!(signal, Signal::SIGTERM | Signal::SIGINT)
}
