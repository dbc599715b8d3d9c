//! The configuration file merged with the global flags, once for every command: a flag wins
//! over the file, the file over the defaults.

use std::path::{Path, PathBuf};

use canup::config::Config;
use canup::repository;
use canup::sysroot::Sysroot;

use super::args::GlobalArgs;
use super::{Failure, usage};

pub struct Settings {
    /// Where the configuration came from (named in messages).
    pub config_path: PathBuf,
    pub config: Config,
    pub sysroot: Sysroot,
    pub state_dir: PathBuf,
    repository: Option<String>,
    trusted_root: Option<PathBuf>,
}

impl Settings {
    /// `config` replaces `--config` (`step run --policy`): it must exist. `--config` itself
    /// may be absent: vendor commands and step authors often have none.
    pub fn resolve(global: &GlobalArgs, config: Option<&Path>) -> Result<Self, Failure> {
        let (config_path, mut loaded) = match config {
            Some(p) => (p.to_owned(), Config::load(p).map_err(usage)?),
            None if global.config.exists() => (global.config.clone(), Config::load(&global.config).map_err(usage)?),
            None => (global.config.clone(), Config::default()),
        };
        if let Some(dir) = &global.state_dir {
            loaded.state_dir = Some(dir.clone());
        }
        let sysroot = match global.sysroot.as_ref().or(loaded.sysroot.as_ref()) {
            Some(dir) => Sysroot::new(dir).map_err(usage)?,
            None => Sysroot::host(),
        };
        Ok(Self {
            state_dir: loaded.state_dir(),
            repository: global.repo.clone().or(loaded.repository.clone()),
            trusted_root: global.trusted_root.clone().or(loaded.trusted_root.clone()),
            config_path,
            config: loaded,
            sysroot,
        })
    }

    /// The repository's location, which the operator's commands need.
    pub fn repository(&self) -> Result<&str, Failure> {
        self.repository.as_deref().ok_or_else(|| usage(anyhow::anyhow!("no repository: set `repository` in {} or pass --repo", self.config_path.display())))
    }

    /// The root that starts trust in an empty state directory: the configured file, or the
    /// one built into canup.
    pub fn seed_root(&self) -> Result<Vec<u8>, Failure> {
        repository::trusted_root(self.trusted_root.as_deref()).map_err(usage)
    }
}
