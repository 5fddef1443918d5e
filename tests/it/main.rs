//! Integration tests: the daemon (in-process, or the binary where the process
//! matters) on an ephemeral port, with
//! its state in a temp dir, driven over HTTP like its users drive it.

// Items shared between test modules are `pub`; nothing leaves this binary.
#![allow(unreachable_pub)]

mod support;

mod api_errors;
mod architecture;
mod callbacks;
mod cli;
mod containment;
mod daemon;
mod docs;
mod examples;
mod faults;
mod files;
mod files_cli;
mod hostile;
mod interactive;
mod interactive_cli;
mod output;
mod packaging;
mod readme;
mod retention;
mod run_uids;
mod runs;
mod same_uid;
mod secrets;
mod supervise;
mod upload;
mod warm;
