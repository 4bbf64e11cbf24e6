//! Live reload: on SIGHUP, or when a file of `connectors.toml`'s folder or of the tenant
//! directory changes, the settings are loaded again and applied to the running pipeline. A
//! version that does not load is refused whole, with each problem's file and key, and the
//! one running stays.

use crate::pipeline::Pipeline;
use crate::settings::{Lookup, Settings};
use metrics::counter;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Changes that arrive together (an editor's write and rename, a ConfigMap's symlink swap)
/// are read as one: the reload waits this long after the last of them.
const SETTLE: Duration = Duration::from_millis(300);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
}

/// What asks for reloads: the watcher and the SIGHUP handler, installed at once so that no
/// signal sent after [`Triggers::install`] returns can end the process.
pub struct Triggers {
    rx: mpsc::UnboundedReceiver<Trigger>,
    _watcher: Option<RecommendedWatcher>,
    _signal: Option<tokio::task::JoinHandle<()>>,
}

impl Triggers {
    /// Watches the folder of `config` and `pipeline`'s tenant directory, and handles SIGHUP.
    pub fn install(config: &Path, pipeline: &Pipeline) -> Triggers {
        let (tx, rx) = mpsc::unbounded_channel();
        Triggers {
            _watcher: watch(config, pipeline, tx.clone()),
            _signal: on_sighup(tx),
            rx,
        }
    }

    /// Reloads `config` into `pipeline` whenever a trigger arrives; never returns.
    pub async fn serve(mut self, config: &Path, lookup: Lookup<'_>, pipeline: &Pipeline) {
        while let Some(trigger) = self.rx.recv().await {
            // Take the rest of a burst of changes before reading anything.
            while let Ok(Some(_)) = tokio::time::timeout(SETTLE, self.rx.recv()).await {}
            apply(config, lookup, pipeline, trigger);
        }
        // Only if neither the watcher nor the signal could start: never end the caller's
        // select on our account.
        std::future::pending::<()>().await;
    }
}

/// Installs the triggers and serves them (see [`Triggers`]); never returns.
pub async fn serve(config: &Path, lookup: Lookup<'_>, pipeline: &Pipeline) {
    Triggers::install(config, pipeline)
        .serve(config, lookup, pipeline)
        .await
}

/// Loads `config` and applies it: true if it loaded.
pub fn apply(config: &Path, lookup: Lookup<'_>, pipeline: &Pipeline, trigger: Trigger) -> bool {
    let path = config.display().to_string();
    match Settings::load(&path, lookup) {
        Ok(new) => {
            let reloaded = pipeline.reload(&new);
            counter!("switchyard_config_reloads_total").increment(1);
            tracing::info!(
                ?trigger,
                instances_replaced = reloaded.replaced,
                "settings reloaded"
            );
            if !reloaded.need_restart.is_empty() {
                tracing::warn!(
                    sections = %reloaded.need_restart.join(", "),
                    "these changed but apply only after a restart"
                );
            }
            true
        }
        Err(invalid) => {
            counter!("switchyard_config_reload_failures_total").increment(1);
            for p in &invalid.0 {
                tracing::error!(key = %p.path, problem = %p.message, "settings not reloaded");
            }
            tracing::error!(
                ?trigger,
                problems = invalid.0.len(),
                "the new settings were refused; the running ones stay"
            );
            false
        }
    }
}

/// Watches the folder of `config` and the tenant directory. None (logged) if the platform's
/// watcher cannot start: SIGHUP still works.
fn watch(
    config: &Path,
    pipeline: &Pipeline,
    tx: mpsc::UnboundedSender<Trigger>,
) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(Trigger::FileChanged);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "files cannot be watched; reload with SIGHUP");
            return None;
        }
    };
    let folders: Vec<PathBuf> = folder_of(config)
        .into_iter()
        .chain(pipeline.tenant_directory())
        .collect();
    for folder in folders {
        if let Err(e) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %folder.display(), error = %e, "folder cannot be watched; reload with SIGHUP");
        }
    }
    Some(watcher)
}

fn folder_of(file: &Path) -> Option<PathBuf> {
    match file.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        other => other.map(Path::to_path_buf),
    }
}

/// The SIGHUP handler, registered before this returns; None (logged) if it cannot be.
fn on_sighup(tx: mpsc::UnboundedSender<Trigger>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be handled; reload by changing the files");
            return None;
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(Trigger::Signal).is_err() {
                    return;
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        drop(tx);
        None
    }
}
