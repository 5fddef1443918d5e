//! Starting a reserved run: resolve its secrets, write its first record
//! (write-ahead: the record exists before any process), build its masker,
//! its child env and its shim spec, spawn the shim and hand the run to its
//! task. Collaborators come in as arguments; the only state kept here is
//! the pool of warm shims.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use super::task::{RunCell, RunTask, TaskContext};
use super::warm::WarmPool;
use super::{daemon_credentials, env, env_policy, shim, spawn, Control, NewRun, RunError};
use crate::config::Config;
use crate::durable;
use crate::secrets::mask::Masker;
use crate::secrets::Resolver;
use crate::state_dir::{RunDir, StateDir};

/// Starts runs. Cheap to hold; one per registry.
pub(super) struct Starter {
    config: Arc<Config>,
    state_dir: StateDir,
    /// The daemon's URL, given to runs as `SANDBOXD_URL`.
    url: String,
    resolver: Resolver,
    /// Shims made ahead of need (`--warm-shims`), and on demand beyond.
    warm: WarmPool,
}

impl Starter {
    /// `ended` is told whenever a run's end is recorded.
    pub(super) fn new(
        config: Arc<Config>,
        url: String,
        resolver: Resolver,
        ended: Arc<tokio::sync::Notify>,
    ) -> Starter {
        let shim_exe = Arc::new(spawn::ShimExecutable::new(config.shim_exe.clone()));
        Starter {
            state_dir: StateDir::new(&config.state_dir),
            warm: WarmPool::start(shim_exe, config.warm_shims, ended),
            config,
            url,
            resolver,
        }
    }

    pub(super) fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Starts the run reserved in `cell`. On an error nothing of the run
    /// is left on disk and no process was started; a shim that cannot
    /// start is not an error here (the run ends `failed` through its task).
    pub(super) async fn start(
        &self,
        new: NewRun,
        cell: Arc<RunCell>,
        token: SecretString,
        control: mpsc::UnboundedReceiver<Control>,
        context: TaskContext,
    ) -> Result<(), RunError> {
        let resolved = self.resolver.resolve_all(&new.secrets).await?;
        let run = cell.run();
        let run_dir = self.state_dir.run(&run.run_id);
        let credentials = daemon_credentials(&self.config);
        // A run without secrets of its own masks the daemon's credentials
        // alone: that masker is built once (a build costs tens of µs).
        let masker = if resolved.is_empty() {
            context.credentials.clone()
        } else {
            let values = resolved.iter().map(|(_, v)| v).chain(&credentials);
            Masker::new(values.map(|v| v.expose_secret().as_bytes()))
        };
        let task = RunTask::new(
            cell.clone(),
            control,
            context.clone(),
            masker,
            new.record_sync,
        );
        // A warm shim is known before the first record, which names it: a
        // daemon restarted after a crash finds the shim and re-attaches.
        let warm = self.warm.take().await;
        if let Some(shim) = &warm {
            task.note_shim(shim.identity());
        }
        write_ahead_off_runtime(&cell, &run.cwd, run.default_cwd, &run_dir, new.record_sync)
            .await
            .map_err(|(action, path, err)| RunError::io(&run.run_id, action, &path, err))?;
        // Its own uid (and gid) from --run-uid-range, else --run-user.
        let run_as = match run.run_uid {
            Some(uid) => Some(shim::RunAs { uid, gid: uid }),
            None => self.config.run_as,
        };
        if run.default_cwd {
            let share_gid = self.config.service.run_as.map(|service| service.gid);
            crate::containment::give_work_dir(&run.cwd, run_as, share_gid).map_err(|err| {
                RunError::io(
                    &run.run_id,
                    "giving the work dir to the run user",
                    &run.cwd,
                    err,
                )
            })?;
        }
        let env = self.child_env(&new, &resolved, &token);
        // The shim masks the run's secrets, and sandboxd's own credentials
        // (the session key, the default callback token) only when the run
        // was handed one on purpose (in its env through
        // `allow_sensitive_env`, or in its command): a credential the run
        // does not have never enters a shim.
        let handed = |credential: &&SecretString| {
            let credential = credential.expose_secret();
            let in_env = env.iter().any(|(_, value)| value.contains(credential));
            in_env || run.command.iter().any(|arg| arg.contains(credential))
        };
        let shim_mask: Vec<String> = resolved
            .iter()
            .map(|(_, v)| v)
            .chain(credentials.iter().filter(handed))
            .map(|v| v.expose_secret().to_owned())
            .collect();
        let spec = shim::ShimSpec {
            run_dir: run_dir.path().to_owned(),
            argv: run.command.clone(),
            cwd: run.cwd.clone(),
            env,
            setup: new.setup,
            timeout_ms: new.timeout.as_millis().min(u64::MAX as u128) as u64,
            kill_grace_ms: self.config.kill_grace.as_millis() as u64,
            oom_score_adj: self.config.child_oom_score_adj,
            // Plain copies for the shim; the spec zeroizes them when dropped.
            mask: shim_mask,
            durable: new.record_sync == durable::Durability::Flush || new.callback.is_some(),
            max_output_bytes: self.config.max_output_bytes,
            run_as,
            // A uid of the run's own: whatever runs as it is the run's.
            kill_uid: run.run_uid,
            stdin: new.stdin,
        };
        context
            .log_masks
            .mask(&run.run_id, resolved.iter().map(|(_, v)| v));
        context.metrics.run_started();
        let noted = warm.as_ref().map(spawn::IdleShim::identity);
        let shim = self.hand_over(warm, &spec).await;
        drop(spec);
        drop(resolved);
        if let Ok(shim) = &shim {
            context.metrics.run_shim(noted == Some(shim.identity));
            if noted != Some(shim.identity) {
                // In the record before the run is acknowledged.
                task.record_shim(shim.identity);
            }
        }
        tokio::spawn(task.follow_new(shim));
        Ok(())
    }

    /// Hands the spec to the warm shim when there is one, else (or when the
    /// warm shim died before it got the spec) to a shim made now.
    async fn hand_over(
        &self,
        warm: Option<spawn::IdleShim>,
        spec: &shim::ShimSpec,
    ) -> Result<spawn::ShimProcess, String> {
        if let Some(idle) = warm {
            match spawn::hand_spec(idle, spec).await {
                Ok(shim) => return Ok(shim),
                Err(err) => tracing::debug!("warm shim unusable, starting one: {err}"),
            }
        }
        let idle = self.warm.shim_now().await?;
        spawn::hand_spec(idle, spec).await
    }

    /// How many warm shims are kept, and how many are ready now.
    pub(super) fn warm_shims(&self) -> (usize, usize) {
        self.warm.counts()
    }

    /// Ends the idle warm shims and stops starting new ones.
    pub(super) fn close_warm_shims(&self) {
        self.warm.close();
    }

    /// The run's complete environment: the daemon's, sanitized like the
    /// SDK's `sanitized_env()`, plus the request's env, the resolved
    /// secrets and sandboxd's own variables.
    fn child_env(
        &self,
        new: &NewRun,
        secrets: &[(String, SecretString)],
        token: &SecretString,
    ) -> Vec<(String, String)> {
        let key = self.config.session_key.as_ref().map(|k| k.expose_secret());
        let policy = env_policy(&self.config);
        let mut child = env::base_env(std::env::vars(), new.inherit_env, &policy, key);
        child.extend(new.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, value) in secrets {
            let value = value.expose_secret().to_owned();
            if let Some(mut replaced) = child.insert(name.clone(), value) {
                zeroize::Zeroize::zeroize(&mut replaced);
            }
        }
        if let Some(term) = &new.term {
            child.insert("TERM".to_owned(), term.clone());
        }
        child.insert("SANDBOXD_RUN_ID".to_owned(), new.run_id.clone());
        child.insert("SANDBOXD_URL".to_owned(), self.url.clone());
        let token = token.expose_secret().to_owned();
        if new.callback.is_some() && self.url.starts_with("http") {
            // The completion relay: the script's SDK reports to sandboxd,
            // with the run's own token, never to the service with its key.
            let base = format!("{}/v1/runs/{}", self.url, new.run_id);
            child.insert(
                "AUTOMATION_CALLBACK_URL".to_owned(),
                format!("{base}/complete"),
            );
            child.insert("AUTOMATION_PHASE_URL".to_owned(), format!("{base}/phase"));
            child.insert("AUTOMATION_CALLBACK_API_KEY".to_owned(), token.clone());
        }
        child.insert("SANDBOXD_RUN_TOKEN".to_owned(), token);
        child.into_iter().collect()
    }
}

type DirError = (&'static str, PathBuf, std::io::Error);

/// [`write_ahead`], on the blocking pool when the record is flushed
/// ([`durable::off_runtime_when_flushed`]).
async fn write_ahead_off_runtime(
    cell: &Arc<RunCell>,
    cwd: &Path,
    default_cwd: bool,
    run_dir: &RunDir,
    sync: durable::Durability,
) -> Result<(), DirError> {
    let (cell, cwd, run_dir) = (cell.clone(), cwd.to_owned(), run_dir.clone());
    let dir = run_dir.path().to_owned();
    durable::off_runtime_when_flushed(sync, move || {
        write_ahead(&cell, &cwd, default_cwd, &run_dir, sync)
    })
    .await
    .map_err(|err| ("writing the record of", dir, std::io::Error::other(err)))?
}

/// Creates the run's work dir (when it is the default one) and state dir,
/// and writes its first record. A run refused here (a full or broken
/// state dir) leaves nothing behind.
fn write_ahead(
    cell: &RunCell,
    cwd: &Path,
    default_cwd: bool,
    run_dir: &RunDir,
    sync: durable::Durability,
) -> Result<(), DirError> {
    let new_work_dir = default_cwd && !cwd.exists();
    let run_dir = run_dir.path();
    let created = (|| {
        if default_cwd {
            create_dir(cwd).map_err(|e| ("creating work dir", cwd.to_owned(), e))?;
        }
        create_dir(run_dir).map_err(|e| ("creating run dir", run_dir.to_owned(), e))?;
        cell.persist(sync)
            .map_err(|e| ("writing the record of", run_dir.to_owned(), e))
    })();
    if created.is_err() {
        let _ = std::fs::remove_dir_all(run_dir);
        if new_work_dir {
            let _ = std::fs::remove_dir(cwd);
        }
    }
    created
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
