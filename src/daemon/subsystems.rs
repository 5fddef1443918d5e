//! Building the daemon's parts: the state and work dirs, the outbox, the
//! uploader, the run registry (restored from the state dir), the agent
//! probe and the supervised service, handed to the API as [`AppState`].

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::api::{AppState, StateInner};
use crate::callbacks::Outbox;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runs::Registry;
use crate::state_dir::StateDir;
use crate::supervise::{AgentProbe, Service};
use crate::telemetry::LogMasks;
use crate::upload::Uploader;

/// Prepares the state dirs, restores runs and the outbox, and starts the
/// background tasks and the service (when `service` is not empty).
pub(crate) async fn start(
    config: Config,
    url: String,
    service: Vec<String>,
    log_masks: LogMasks,
) -> anyhow::Result<AppState> {
    let state_dir = StateDir::new(&config.state_dir);
    let containment = crate::containment::Report::probe(&config)?;
    if containment.missing.is_empty() {
        tracing::info!("{}", containment.summary());
    } else {
        tracing::warn!("{}", containment.summary());
    }
    if let Some(warning) = config.run_uid_shortfall() {
        tracing::warn!("{warning}");
    }
    prepare_dirs(&config, &state_dir)?;
    let removed = crate::containment::remove_leftover_cgroups();
    if removed > 0 {
        tracing::info!(removed, "removed the empty cgroups of shims that are gone");
    }
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let outbox = Outbox::start(config.clone(), http.clone(), metrics.clone())
        .context("cannot open the callback outbox")?;
    let roots =
        Arc::new(crate::fsroot::FileRoots::open(&config).context("--work-root: cannot open it")?);
    let uploads = Uploader::new(config.clone(), roots.clone(), metrics.clone());
    let probe = uploads.clone();
    let runs = Registry::new(
        config.clone(),
        url,
        outbox.clone(),
        metrics.clone(),
        http.clone(),
        Arc::new(move |run_id: &str| probe.is_uploading(run_id)),
        log_masks,
    );
    runs.restore()
        .await
        .context("cannot restore runs from the state dir")?;
    let agent_uid = config
        .agent_server_uid
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let agent = AgentProbe::start(config.agent_server_url.clone(), http.clone(), agent_uid);
    let service = Service::start(&config, service, metrics.clone(), agent.clone()).await?;
    Ok(AppState::new(StateInner {
        config,
        state_dir,
        runs,
        outbox,
        metrics,
        http,
        uploads,
        files: crate::files::Files::new(roots),
        agent,
        service,
        started: Instant::now(),
        containment,
        writers: Default::default(),
    }))
}

fn prepare_dirs(config: &Config, state_dir: &StateDir) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for (flag, dir) in [
        ("--state-dir", &config.state_dir),
        ("--work-root", &config.work_root),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("{flag} {}: cannot create it", dir.display()))?;
        check_writable(flag, dir)?;
    }
    if config.run_as.is_some() {
        // The run user must reach its own work dir, not list the others.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.work_root, std::fs::Permissions::from_mode(0o711))
            .with_context(|| {
                format!(
                    "--work-root {}: cannot make it traversable for --run-user",
                    config.work_root.display()
                )
            })?;
    }
    crate::upload::clean_staging(&config.work_root).with_context(|| {
        format!(
            "--work-root {}: cannot clean it",
            config.work_root.display()
        )
    })?;
    let subdirs = state_dir
        .create_subdirs()
        .context("--state-dir: cannot create")?;
    for dir in subdirs {
        check_writable("--state-dir", &dir)?;
    }
    crate::upload::clean_record_temp_files(&config.state_dir).with_context(|| {
        format!(
            "--state-dir {}: cannot clean it",
            config.state_dir.display()
        )
    })?;
    Ok(())
}

/// Creates and removes a file in `dir`: a dir sandboxd cannot write stops
/// the start, instead of failing every run later.
fn check_writable(flag: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".sandboxd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("{flag} {}: not writable by sandboxd", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
