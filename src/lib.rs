//! sandboxd: the in-sandbox supervisor of AI-agent sandboxes.
//!
//! It takes uploads (tarballs extracted safely, files written atomically),
//! executes runs in their own process groups with sanitized environments,
//! resolves and masks secrets, and reports every run's completion through a
//! durable outbox.
//!
//! Layout:
//! - [`cli`]: the command line (`serve`, the internal `shim`, client commands).
//! - [`config`]: `serve` flags and the validated [`config::Config`].
//! - [`daemon`]: the process: hardening, bind, signals, systemd notify,
//!   building the parts, and [`run`], the daemon's whole life on a bound
//!   listener and a signal stream.
//! - [`api`]: the HTTP API (axum): routes, auth, wire types.
//! - [`error`]: the one mapping of errors to HTTP.
//! - [`runs`]: run registry, child env, the shim, logs.
//! - [`upload`]: bundle extraction and file writes.
//! - [`files`]: reading files under the roots.
//! - `fsroot`: the roots opened once, and resolution beneath them.
//! - [`secrets`]: secret sources, resolution and masking.
//! - [`callbacks`]: the completion outbox and its delivery.
//! - [`supervise`]: the supervised service and PID 1 duties.
//! - [`procfs`]: all reading of `/proc`, and [`procfs::ProcessIdentity`].
//! - `netdiag`: the listening TCP sockets and their owners (sock_diag).
//! - [`signals`]: the one list of forwarded signals.
//! - [`state_dir`]: every path of the state dir.
//! - [`metrics`], [`telemetry`], [`durable`]: cross-cutting helpers.

pub mod api;
pub(crate) mod callbacks;
pub(crate) mod channel_writer;
pub mod cli;
pub mod config;
pub(crate) mod containment;
pub mod daemon;
pub(crate) mod durable;
pub mod error;
pub mod files;
pub(crate) mod fsroot;
pub(crate) mod metrics;
pub(crate) mod netdiag;
pub(crate) mod procfs;
pub mod runs;
pub mod secrets;
pub(crate) mod signals;
pub(crate) mod state_dir;
pub(crate) mod supervise;
pub(crate) mod telemetry;
pub mod upload;

pub use daemon::{run, Listener, SignalSender, Signals};
