//! Fetching, verifying and compiling what a plan needs, concurrently and ahead of the run.

use std::collections::HashMap;
use std::sync::Arc;

use semver::Version;

use super::{Session, UpgradeError};
use crate::plan::PlannedStep;
use crate::repository::{Index, IndexStep, Release, ReleaseData, Repository};
use crate::sandbox::{LoadedStep, Sandbox};

pub(super) async fn load_step(repo: &Repository, sandbox: &Arc<Sandbox>, step: &IndexStep) -> Result<LoadedStep, UpgradeError> {
    let wasm = repo.module(step).await?;
    tracing::debug!(step = %step.manifest.id, "module verified");
    let (sandbox, id, api) = (sandbox.clone(), step.manifest.id.clone(), step.api.clone());
    // Compiling is CPU work; it must not hold up the runtime's other tasks (downloads, the UI).
    tokio::task::spawn_blocking(move || sandbox.load(&id, &wasm, &api))
        .await
        .map_err(|source| UpgradeError::Task { what: format!("compiling step {}", step.manifest.id), source })?
        .map_err(UpgradeError::from)
}

type Task<T> = tokio::task::JoinHandle<Result<T, UpgradeError>>;

/// The modules (one per distinct module) and release data a plan needs, each fetched,
/// verified and compiled in its own task: downloads run concurrently and each module
/// compiles as soon as it is verified. Work can start before the plan is known (the target
/// release's own steps, while detection runs); what the plan turns out not to need is dropped.
/// The plan's modules, verified and compiled (by digest), and each release's data files.
pub type Loaded = (HashMap<String, LoadedStep>, HashMap<Version, Arc<ReleaseData>>);

pub(super) struct Prefetch {
    modules: HashMap<String, Task<LoadedStep>>,
    data: HashMap<Version, Task<Arc<ReleaseData>>>,
    repo: Arc<Repository>,
    sandbox: Arc<Sandbox>,
}

impl Prefetch {
    pub(super) fn new(session: &Session) -> Self {
        Self { modules: HashMap::new(), data: HashMap::new(), repo: session.repo.clone(), sandbox: session.sandbox.clone() }
    }

    /// Starts fetching `step`'s module and `release`'s data unless already started.
    pub(super) fn want(&mut self, step: &IndexStep, release: &Release) {
        if !self.modules.contains_key(&step.sha256) {
            let (repo, sandbox, step) = (self.repo.clone(), self.sandbox.clone(), step.clone());
            let sha = step.sha256.clone();
            self.modules.insert(sha, tokio::spawn(async move { load_step(&repo, &sandbox, &step).await }));
        }
        if !release.data.is_empty() && !self.data.contains_key(&release.version) {
            let (repo, release) = (self.repo.clone(), release.clone());
            let version = release.version.clone();
            self.data.insert(version, tokio::spawn(async move { Ok(Arc::new(repo.release_data(&release).await?)) }));
        }
    }

    /// Waits for what `steps` need (the first failure, in plan order, is the answer); the
    /// rest is dropped with the prefetch.
    pub(super) async fn finish(mut self, index: &Index, steps: &[&PlannedStep]) -> Result<Loaded, UpgradeError> {
        async fn join<T>(task: Task<T>) -> Result<T, UpgradeError> {
            task.await.map_err(|source| UpgradeError::Task { what: "fetching the plan's modules".into(), source })?
        }
        for p in steps {
            if let Some(release) = index.release(&p.release) {
                self.want(&p.step, release);
            }
        }
        let mut loaded = HashMap::new();
        let mut data = HashMap::new();
        for p in steps {
            if let Some(task) = self.modules.remove(&p.step.sha256) {
                loaded.insert(p.step.sha256.clone(), join(task).await?);
            }
            if let Some(task) = self.data.remove(&p.release) {
                data.insert(p.release.clone(), join(task).await?);
            }
        }
        Ok((loaded, data))
    }
}

/// Whatever is still running when the prefetch goes (a declined plan, an error, work the plan
/// did not need) is stopped.
impl Drop for Prefetch {
    fn drop(&mut self) {
        self.modules.values().for_each(|t| t.abort());
        self.data.values().for_each(|t| t.abort());
    }
}
