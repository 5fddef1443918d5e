//! The upload's progress display: a bar on a terminal, a plain line a
//! second otherwise, and the count of bytes sent.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ProgressMode;

/// Progress of one upload: bytes read (the bar's position) and bytes sent.
/// Cheap to clone; shared with the packer thread.
#[derive(Clone)]
pub(super) struct Progress {
    bar: ProgressBar,
    sent: Arc<AtomicU64>,
    ticker: Option<Arc<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    pub(super) fn start(mode: ProgressMode, total: u64, prefix: String) -> Progress {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        let sent = Arc::new(AtomicU64::new(0));
        let style = ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> ");
        // Styled before it can draw: the first frame has our style too, not
        // the library's default.
        let bar = ProgressBar::hidden();
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar.set_length(total);
        if mode == ProgressMode::Bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if mode == ProgressMode::Bar {
            // Keeps rate and eta moving while a big file is compressed.
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        let ticker = (mode == ProgressMode::Plain).then(|| {
            eprintln!("sandboxd: {}: {}", bar.prefix(), BinaryBytes(total));
            Arc::new(tokio::spawn(plain_lines(bar.clone(), sent.clone())))
        });
        Progress { bar, sent, ticker }
    }

    pub(super) fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    pub(super) fn sent_bytes(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(super) fn finish(&self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// One line a second, for logs and pipes.
async fn plain_lines(bar: ProgressBar, sent: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (done, total) = (bar.position(), bar.length().unwrap_or(0).max(1));
        eprintln!(
            "sandboxd: {}: {} of {} ({}%), {} sent, {}/s",
            bar.prefix(),
            BinaryBytes(done),
            BinaryBytes(total),
            (done * 100 / total).min(100),
            BinaryBytes(sent.load(Ordering::Relaxed)),
            BinaryBytes(bar.per_sec() as u64),
        );
    }
}
