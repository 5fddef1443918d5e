//! Samples and their summaries.

/// A scenario's figure for one system: samples, or why there are none.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Measured samples (unit given by the scenario).
    Samples(Vec<f64>),
    /// Not measured, with the reason shown in the report.
    Unavailable(String),
}

impl Outcome {
    pub(crate) fn samples(&self) -> Option<&[f64]> {
        match self {
            Outcome::Samples(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    pub(crate) fn median(&self) -> Option<f64> {
        self.samples().map(|s| percentile(s, 0.5))
    }

    pub(crate) fn p99(&self) -> Option<f64> {
        self.samples().map(|s| percentile(s, 0.99))
    }

    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Unavailable(r) => Some(r),
            Outcome::Samples(s) if s.is_empty() => Some("no samples"),
            Outcome::Samples(_) => None,
        }
    }
}

/// Nearest-rank percentile of unsorted samples (`p` in 0..=1).
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
