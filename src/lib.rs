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
//! - [`daemon`]: process-level setup: bind, signals, systemd notify.
//! - [`server`]: [`run`], the daemon's whole life on a bound listener.
//! - [`api`]: the HTTP API (axum): routes, auth, wire types.
//! - [`error`]: the one mapping of errors to HTTP.
//! - [`runs`]: run registry, child env, the shim, logs.
//! - [`upload`]: bundle extraction and file writes.
//! - [`secrets`]: secret sources, resolution and masking.
//! - [`callbacks`]: the completion outbox and its delivery.
//! - [`supervise`]: the supervised service and PID 1 duties.
//! - [`procfs`]: all reading of `/proc`, and [`procfs::ProcessIdentity`].
//! - [`signals`]: the one list of forwarded signals.
//! - [`metrics`], [`telemetry`], [`durable`]: cross-cutting helpers.

pub mod api;
pub mod callbacks;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod durable;
pub mod error;
pub mod metrics;
pub mod procfs;
pub mod runs;
pub mod secrets;
pub mod server;
pub mod signals;
pub mod supervise;
pub mod telemetry;
pub mod upload;

pub use server::{run, Listener};
