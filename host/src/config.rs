//! Operator configuration (`/etc/canup/canup.toml`): the policy (upper bound of what any step
//! may get), the endpoints steps may call, the sandbox limits, the repository and its trusted
//! root, and the edition and method when detection should not decide.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capabilities::CapabilitySet;
use crate::capabilities::exec::ExecLimits;
use crate::capabilities::http::{Endpoints, HttpLimits};
pub use crate::formats::ConfigError;

pub const DEFAULT_CONFIG: &str = "/etc/canup/canup.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/canup";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the signed release repository is: `https://…`, `file://…` or a directory.
    #[serde(default)]
    pub repository: Option<String>,
    /// A root of trust replacing the one built into canup (e.g. a staging repository's).
    #[serde(default)]
    pub trusted_root: Option<PathBuf>,
    /// Pins the edition when detection should not decide.
    #[serde(default)]
    pub edition: Option<crate::manifest::Edition>,
    /// Pins the install method when detection should not decide.
    #[serde(default)]
    pub method: Option<crate::manifest::Method>,
    /// Run every step against this directory instead of `/` (staging rehearsals).
    #[serde(default)]
    pub sysroot: Option<PathBuf>,
    /// Journal, audit log, backups and caches.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The directory of the Docker Compose project (its `docker-compose.yml` and `.env`):
    /// the Canopsis guides name none, so the operator does; `/opt/canopsis/docker` unless
    /// stated. Steps name it `{compose_dir}` in their capabilities and read it as the setting
    /// `compose_dir`; detection checks that the running containers come from it.
    #[serde(default)]
    pub compose_dir: Option<String>,
    /// The operator's own rules. The effective policy adds the shipped rules and the
    /// reviewed drop-ins (see `crate::policy`), less `[deny]`.
    #[serde(default)]
    pub policy: CapabilitySet,
    /// The rules shipped with canup; `/usr/share/canup/policy.toml` unless stated.
    #[serde(default)]
    pub shipped_policy: Option<PathBuf>,
    /// Where `canup policy review` writes the grants the operator accepted, and canup reads
    /// them back; `policy.d/` beside this file unless stated.
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    /// What no step may get, whatever any rule allows.
    #[serde(default)]
    pub deny: crate::policy::Deny,
    /// The files the effective policy was read from (not a setting).
    #[serde(skip)]
    pub sources: crate::policy::Sources,
    #[serde(default)]
    pub endpoints: Endpoints,
    /// Database endpoints whose URL or password is not the installation's own (by default
    /// canup reads `CPS_POSTGRES_URL`, `CPS_MONGO_URL`, `CPS_REDIS_URL` from
    /// go-engines-vars.conf, as the engines do).
    #[serde(default)]
    pub databases: crate::capabilities::database::Databases,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Values steps may read (`context.setting`): e.g. `drain_timeout_seconds = "900"`,
    /// `broadcast_message = "…"`. Not secrets: steps and logs can show them.
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
    /// The operator's answers to steps' optional questions (`ui.choose`), given in advance:
    /// `[answers."23.10.3/options"] enable-x = "yes"`, by step id then question id.
    #[serde(default)]
    pub answers: Answers,
    #[serde(default)]
    pub backup: BackupConfig,
}

/// `[backup]`: what canup saves before a run's first change, and where (see
/// `crate::backup::set`). Every field has a default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where each run's backups go (`DIR/RUN/`); `STATE/backups` unless stated. The file
    /// backups of `restore-files` stay under the state directory.
    pub dir: Option<PathBuf>,
    /// How many runs' backup sets to keep, the newest (3 unless stated); older run
    /// directories are removed whole when a new set is taken.
    pub keep: Option<usize>,
    /// Which databases are dumped.
    pub databases: Option<DumpPolicy>,
    /// The configuration directories saved; `/opt/canopsis/etc` on a package installation
    /// and the Compose project's directory on a Compose one unless stated.
    pub config_dirs: Option<Vec<String>>,
    /// Free space (MiB) the destination must keep after the backups (256 unless stated):
    /// the disk a dump fills may be the one Canopsis writes to.
    pub reserve_mib: Option<u64>,
}

/// `[backup] databases`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DumpPolicy {
    /// The databases the plan's steps migrate: those they ask a backup of (`backup` in
    /// step.toml) or may write to. A release whose steps migrate nothing skips the dumps.
    #[default]
    Asked,
    /// Every database of the installation (postgres, mongo) on every run.
    Always,
    /// None: a rollback of a run that migrated a database is then refused.
    Never,
}

impl BackupConfig {
    pub fn keep(&self) -> usize {
        self.keep.unwrap_or(3).max(1)
    }

    pub fn reserve(&self) -> u64 {
        self.reserve_mib.unwrap_or(256).saturating_mul(1 << 20)
    }
}

/// Step id → question id → the chosen option.
pub type Answers = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// Per-step bounds, in operator units. Every field has a default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory_mib: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub wall_seconds: Option<u64>,
    pub guest_output_kib: Option<u64>,
    /// A command's limit where its step declares none.
    pub exec_timeout_seconds: Option<u64>,
    /// The most any command may run where the policy rule that admits it sets no
    /// `timeout_seconds`.
    pub exec_max_timeout_seconds: Option<u64>,
    /// How often a running command's progress is shown.
    pub exec_progress_seconds: Option<u64>,
    pub exec_output_kib: Option<u64>,
    pub http_timeout_seconds: Option<u64>,
    pub http_body_kib: Option<u64>,
    pub fs_read_kib: Option<u64>,
    pub ui_text_kib: Option<u64>,
    /// A command's arguments and variables, in all.
    pub exec_args_kib: Option<u64>,
    /// The largest step module canup compiles.
    pub module_kib: Option<u64>,
    /// How long compiling one step module may take.
    pub module_compile_seconds: Option<u64>,
}

/// The bounds the sandbox applies to one step.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    pub memory: usize,
    /// Time spent running guest code (host calls excluded).
    pub cpu: Duration,
    /// Time of the whole step, host calls included.
    pub wall: Duration,
    /// Bytes kept of each of the guest's own stdout and stderr.
    pub guest_output: usize,
    pub exec: ExecLimits,
    pub http: HttpLimits,
    /// The largest file a step may read or append to.
    pub fs_read: usize,
    /// Text a step may show the operator (logs, progress, questions, its dry-run listing),
    /// in all.
    pub ui_text: usize,
    /// Bytes of one command's arguments and variables: Linux takes 128 KiB for one argument,
    /// and a dry run keeps what it lists.
    pub exec_args: usize,
    /// The largest module compiled: compiling costs about 8 s and 80 MB per MB of module on
    /// these machines (15 MB took 121 s and 1.17 GB), and published modules are ~200 KB.
    pub module: usize,
    /// How long compiling one module may take (published modules: about a second).
    pub compile: Duration,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            memory: 256 << 20,
            cpu: Duration::from_secs(60),
            wall: Duration::from_secs(3600),
            guest_output: 64 << 10,
            exec: ExecLimits::default(),
            http: HttpLimits::default(),
            fs_read: 16 << 20,
            ui_text: 256 << 10,
            exec_args: 128 << 10,
            module: 2 << 20,
            compile: Duration::from_secs(60),
        }
    }
}

impl LimitsConfig {
    pub fn resolve(&self) -> StepLimits {
        let d = StepLimits::default();
        let kib = |v: Option<u64>, default: usize| v.map_or(default, |k| (k as usize).saturating_mul(1024));
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        StepLimits {
            memory: self.memory_mib.map_or(d.memory, |m| (m as usize).saturating_mul(1 << 20)),
            cpu: secs(self.cpu_seconds, d.cpu),
            wall: secs(self.wall_seconds, d.wall),
            guest_output: kib(self.guest_output_kib, d.guest_output),
            exec: ExecLimits {
                default_timeout: secs(self.exec_timeout_seconds, d.exec.default_timeout),
                max_timeout: secs(self.exec_max_timeout_seconds, d.exec.max_timeout),
                progress_every: secs(self.exec_progress_seconds, d.exec.progress_every),
                max_output: kib(self.exec_output_kib, d.exec.max_output),
            },
            http: HttpLimits {
                timeout: secs(self.http_timeout_seconds, d.http.timeout),
                max_response_body: kib(self.http_body_kib, d.http.max_response_body),
                ..d.http
            },
            fs_read: kib(self.fs_read_kib, d.fs_read),
            ui_text: kib(self.ui_text_kib, d.ui_text),
            exec_args: kib(self.exec_args_kib, d.exec_args),
            module: kib(self.module_kib, d.module),
            compile: secs(self.module_compile_seconds, d.compile),
        }
    }
}

impl Config {
    /// canup.toml, with the shipped rules and the drop-ins beside it added to its policy.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let mut config = Self::parse(&text, &shown)?;
        let drop_in_dir = config.policy_dir.clone().unwrap_or_else(|| path.parent().unwrap_or(Path::new("/")).join(crate::policy::DROP_IN_DIR));
        let shipped = config.shipped_policy.clone().unwrap_or_else(|| PathBuf::from(crate::policy::SHIPPED_POLICY));
        let (rules, files) = crate::policy::read_sources(&shipped, &drop_in_dir)?;
        config.policy.add(&config.deny.applied_to(&rules.at_compose_dir(&config.compose_dir())));
        config.sources = crate::policy::Sources { files, drop_in_dir };
        Ok(config)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = crate::formats::strict_toml(text).map_err(|source| ConfigError::Parse { path: origin.to_owned(), source })?;
        let dir = config.compose_dir();
        let invalid = |why: &str| ConfigError::Invalid { path: origin.to_owned(), what: format!("compose_dir = {dir:?}"), why: why.to_owned() };
        if !dir.starts_with('/') || dir == "/" || dir.ends_with('/') {
            return Err(invalid("it must be an absolute directory path, without a trailing /"));
        }
        if dir.split('/').any(|c| c == ".." || c == ".") || dir.contains("//") {
            return Err(invalid("it must not hold `.` or `..` components"));
        }
        if dir.contains(['*', '?', '[', ']', '{', '}', '\\', '\0']) {
            return Err(invalid("it must not hold glob characters (* ? [ ] { }) or backslashes"));
        }
        match config.settings.get("compose_dir") {
            Some(set) if *set != dir => {
                return Err(invalid(&format!("[settings] compose_dir says {set:?}: set the directory once, as the top-level compose_dir")));
            }
            _ => {}
        }
        // Steps read where the project is as a setting, and the policy names it as steps do.
        config.settings.insert("compose_dir".to_owned(), dir.clone());
        config.policy = config.deny.applied_to(&config.policy.at_compose_dir(&dir));
        crate::policy::validate(&config.policy, origin)?;
        Ok(config)
    }

    /// Where the Docker Compose project is.
    pub fn compose_dir(&self) -> String {
        self.compose_dir.clone().unwrap_or_else(|| crate::capabilities::DEFAULT_COMPOSE_DIR.to_owned())
    }

    /// Where the runs' backup sets go (`[backup] dir`).
    pub fn backup_dir(&self) -> PathBuf {
        self.backup.dir.clone().unwrap_or_else(|| self.state_dir().join("backups"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_names_key_and_line() {
        let e = Config::parse("[limits]\nmemory_mib = 10\ncpu_secs = 3\n", "canup.toml").unwrap_err().to_string();
        assert!(e.contains("cpu_secs") && e.contains("line 3") && e.contains("canup.toml"), "{e}");
    }

    #[test]
    fn the_compose_directory_is_one_setting_that_steps_and_the_policy_read() {
        let c = Config::parse("compose_dir = \"/srv/cps\"\n[policy.fs]\nread = [\"{compose_dir}/.env\"]\n", "t").unwrap();
        assert_eq!(c.policy.fs.read, ["/srv/cps/.env"]);
        assert_eq!(c.settings["compose_dir"], "/srv/cps");
        let default = Config::parse("[policy.fs]\nread = [\"{compose_dir}/.env\"]\n", "t").unwrap();
        assert_eq!(default.policy.fs.read, ["/opt/canopsis/docker/.env"]);
        for bad in ["srv/cps", "/srv/cps/", "/srv/../etc", "/srv/*", "/"] {
            let e = Config::parse(&format!("compose_dir = {bad:?}\n"), "canup.toml").unwrap_err().to_string();
            assert!(e.contains("canup.toml") && e.contains("compose_dir"), "{bad}: {e}");
        }
        let e = Config::parse("compose_dir = \"/a\"\n[settings]\ncompose_dir = \"/b\"\n", "t").unwrap_err().to_string();
        assert!(e.contains("set the directory once"), "{e}");
    }

    #[test]
    fn limits_default_and_override() {
        let c = Config::parse("[limits]\nmemory_mib = 16\n", "t").unwrap();
        let l = c.limits.resolve();
        assert_eq!(l.memory, 16 << 20);
        assert_eq!(l.cpu, StepLimits::default().cpu);
    }

    #[test]
    fn the_shipped_default_config_parses_and_uncommented_examples_do_too() {
        let shipped = include_str!("../dist/canup.toml");
        let c = Config::parse(shipped, "host/dist/canup.toml").unwrap();
        assert!(c.repository.is_none(), "the operator names the repository");
        assert!(c.policy.is_empty(), "the shipped rules are the package's policy.toml, not the operator's file");
        let rules: crate::policy::PolicyFile = crate::formats::strict_toml(include_str!("../dist/policy.toml")).unwrap();
        assert!(rules.policy.exec.iter().any(|r| r.program == "/usr/bin/yum"));
        // Every commented example line is valid once the operator uncomments it.
        let uncommented: String =
            shipped.lines().map(|l| l.strip_prefix("# ").filter(|r| r.starts_with('[') || r.contains(" = ")).unwrap_or(l)).map(|l| format!("{l}\n")).collect();
        let c = Config::parse(&uncommented, "uncommented").unwrap();
        assert_eq!(c.state_dir(), PathBuf::from("/var/lib/canup"));
        assert!(c.endpoints.contains_key("rabbitmq") && c.endpoints.contains_key("canopsis-api"));
        assert_eq!(c.answers["23.10.3/options"]["enable-x"], "yes");
    }
}
