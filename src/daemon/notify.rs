//! systemd notification: READY once the API listens, watchdog pings while
//! the API answers, STOPPING when the ordered shutdown begins. Each is a
//! no-op without `NOTIFY_SOCKET`.

use std::time::Duration;

/// Tells systemd (when `NOTIFY_SOCKET` is set) that sandboxd is ready, and
/// starts watchdog pings when `WATCHDOG_USEC` asks for them. A ping is sent
/// only while the event loop is healthy: it comes from a task on the same
/// runtime as the API, and, for a TCP listener, only after the daemon's own
/// `GET /healthz` at `url` answered within a second. A stalled loop or a
/// stuck accept path stops the pings, and systemd restarts sandboxd.
pub(crate) fn ready(url: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0;
    if !(sd_notify::watchdog_enabled(false, &mut usec) && usec > 0) {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    let healthz = url.starts_with("http").then(|| format!("{url}/healthz"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1).min(period))
        .build()
        .ok();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let healthy = match (&healthz, &http) {
                (Some(healthz), Some(http)) => matches!(
                    http.get(healthz).send().await,
                    Ok(res) if res.status().is_success()
                ),
                _ => true,
            };
            if healthy {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::warn!("the API did not answer its own health check: no watchdog ping");
            }
        }
    });
}

/// Tells systemd that the ordered shutdown has begun.
pub(crate) fn stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
}
