//! Prometheus metrics: runs by state, run durations, callback attempts,
//! upload bytes, HTTP requests by route and status.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShimLabels {
    shim: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// All of sandboxd's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    runs_ended: Family<StateLabels, Counter>,
    runs_started: Counter,
    run_shims: Family<ShimLabels, Counter>,
    run_duration: Histogram,
    callback_attempts: Family<OutcomeLabels, Counter>,
    upload_bytes: Counter,
    runs_pruned: Counter,
    service_restarts: Counter,
    service_state: Family<StateLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sandboxd");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let runs_ended = Family::<StateLabels, Counter>::default();
        registry.register(
            "runs_ended",
            "Runs that ended, by final state",
            runs_ended.clone(),
        );
        let runs_started = Counter::default();
        registry.register("runs_started", "Runs accepted", runs_started.clone());
        let run_shims = Family::<ShimLabels, Counter>::default();
        registry.register(
            "run_shims",
            "Runs by the shim they were handed to: warm (started ahead of need) or cold (started for the run)",
            run_shims.clone(),
        );
        let buckets = [0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
        let run_duration = Histogram::new(buckets.into_iter());
        registry.register(
            "run_duration_seconds",
            "Duration of ended runs",
            run_duration.clone(),
        );
        let callback_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callback_attempts",
            "Completion callback attempts by outcome",
            callback_attempts.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register(
            "upload_bytes",
            "Bytes received by bundle and file uploads",
            upload_bytes.clone(),
        );
        let runs_pruned = Counter::default();
        registry.register(
            "runs_pruned",
            "Ended runs removed by retention (--retain-runs, --retain-for)",
            runs_pruned.clone(),
        );
        let service_restarts = Counter::default();
        registry.register(
            "service_restarts",
            "Restarts of the supervised service",
            service_restarts.clone(),
        );
        let service_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "service_state",
            "1 for the supervised service's current state",
            service_state.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                runs_ended,
                runs_started,
                run_shims,
                run_duration,
                callback_attempts,
                upload_bytes,
                runs_pruned,
                service_restarts,
                service_state,
            }),
        }
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        let labels = HttpLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.inner.http_requests.get_or_create(&labels).inc();
    }

    /// Counts ended runs removed by retention.
    pub fn runs_pruned(&self, count: u64) {
        self.inner.runs_pruned.inc_by(count);
    }

    /// Ended runs removed by retention so far.
    pub fn runs_pruned_total(&self) -> u64 {
        self.inner.runs_pruned.get()
    }

    /// Counts an accepted run.
    pub fn run_started(&self) {
        self.inner.runs_started.inc();
    }

    /// Counts a run handed to a warm shim, or to one started for it.
    pub fn run_shim(&self, warm: bool) {
        let shim = if warm { "warm" } else { "cold" };
        self.inner
            .run_shims
            .get_or_create(&ShimLabels { shim })
            .inc();
    }

    /// Counts an ended run and its duration.
    pub fn run_ended(&self, state: &str, duration_s: Option<f64>) {
        self.inner
            .runs_ended
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .inc();
        if let Some(duration) = duration_s {
            self.inner.run_duration.observe(duration);
        }
    }

    /// Counts a callback attempt (`delivered`, `retry`, `failed`).
    pub fn callback_attempt(&self, outcome: &str) {
        self.inner
            .callback_attempts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts uploaded bytes.
    pub fn upload_bytes(&self, bytes: u64) {
        self.inner.upload_bytes.inc_by(bytes);
    }

    /// Counts a service restart.
    pub fn service_restarted(&self) {
        self.inner.service_restarts.inc();
    }

    /// Sets the service's current state (1 for it, 0 for the others).
    pub fn service_state(&self, current: &str, all: &[&str]) {
        for state in all {
            let value = i64::from(*state == current);
            self.inner
                .service_state
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(value);
        }
    }

    /// Prometheus text exposition, with live run counts appended.
    pub fn render(&self, runs_by_state: &[(&str, u64)], outbox: (u64, u64)) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.inner.registry);
        // Drop the EOF marker; the gauges below belong to the same exposition.
        if let Some(stripped) = text.strip_suffix("# EOF\n") {
            text.truncate(stripped.len());
        }
        text.push_str(
            "# HELP sandboxd_runs Runs known to sandboxd, by state.\n# TYPE sandboxd_runs gauge\n",
        );
        for (state, count) in runs_by_state {
            text.push_str(&format!("sandboxd_runs{{state=\"{state}\"}} {count}\n"));
        }
        text.push_str("# HELP sandboxd_outbox Completion callbacks, by outbox state.\n# TYPE sandboxd_outbox gauge\n");
        text.push_str(&format!(
            "sandboxd_outbox{{state=\"pending\"}} {}\n",
            outbox.0
        ));
        text.push_str(&format!(
            "sandboxd_outbox{{state=\"failed\"}} {}\n",
            outbox.1
        ));
        text.push_str("# EOF\n");
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
