//! Runs: exec, env, process groups, timeouts, cancel, logs, records.
