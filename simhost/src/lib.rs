//! The simulated host: a single-node Canopsis as a directory tree, for `--sysroot`.
//!
//! MongoDB, yum, canoctl and Canopsis itself cannot exist on a Debian build machine, so the
//! programs a step runs are stubs: each is a short shell wrapper that hands over to the
//! `canup-sim` binary copied into the tree, which records the call (argv, env, user, cwd) as
//! one JSON line in `/var/log/canup-sim/calls.jsonl` and changes the tree the way the real tool
//! would (`yum update` to V rewrites `VERSION.txt`, `systemctl enable` creates the wants link,
//! ...). The files' contents follow what `canopsis-docs/` quotes.
//!
//! The wrappers find their host from their own path (`$0`), and the stub program lives inside
//! the tree: a simulated host can be copied or moved and the copy drives itself, never the
//! original. Step authors make one with `canup-sim create` (see `sdk/README.md`); the project's
//! tests and demo make theirs with the same [`SimHost::create`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub mod api;
pub mod compose;
pub mod facts;
pub mod packages;
pub mod rabbitmq;

/// Where each program of the host lives, as a step names it. `yum`, `dnf` and `rpm` are the
/// real tools run against the host's root, `redis-cli`, `psql`, `pg_dump` and `pg_restore` the
/// real ones against the servers canup connects them to; the others are simulated
/// (`mongodump` and `mongorestore` copy the simulated MongoDB's file to and from the archive). A host has MongoDB's legacy
/// `mongo` shell before 24.04 and `mongosh` from 24.04 (MongoDB 7 ships no `mongo`).
pub const PROGRAMS: &[&str] = &[
    "/usr/bin/yum",
    "/usr/bin/dnf",
    "/usr/bin/rpm",
    "/usr/bin/su",
    "/usr/bin/systemctl",
    "/usr/bin/canoctl",
    "/usr/bin/mongo",
    "/usr/bin/mongosh",
    "/usr/bin/psql",
    "/usr/bin/pg_dump",
    "/usr/bin/pg_restore",
    "/usr/bin/mongodump",
    "/usr/bin/mongorestore",
    "/usr/bin/docker-compose",
    "/usr/bin/docker",
    "/usr/bin/redis-cli",
    "/opt/canopsis/bin/canopsinit",
    "/opt/canopsis/bin/init",
    "/opt/canopsis/bin/canopsis-reconfigure",
];

/// The MongoDB migration scripts a 4.5 package ships (those the 4.5.x notes run).
pub const MIGRATIONS: &[&str] = &[
    "release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js",
    "release4.5/000_add_pbehavior_info_to_entity.js",
    "release4.5/008_add_multiple_executions_to_job.js",
];

pub const CALL_LOG: &str = "/var/log/canup-sim/calls.jsonl";
/// The package manager's own bookkeeping (rpm database, dnf cache, history and logs): not
/// compared file by file in [`SimHost::snapshot`], which lists the installed packages instead.
const PACKAGE_STATE: &[&str] = &["/var/lib/rpm", "/var/lib/dnf", "/var/cache/dnf", "/var/log/dnf", "/var/log/hawkey.log", "/etc/dnf", packages::RPM_HOME];
/// The pseudo-file of [`SimHost::snapshot`] listing the installed packages (`rpm -qa`).
pub const INSTALLED_PACKAGES: &str = "(rpm -qa)";
/// Where the tree keeps its own copy of the `canup-sim` program the wrappers run.
pub const STUB_PROGRAM: &str = "/usr/libexec/canup-sim/canup-sim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    Core,
    Cat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Packages,
    Compose,
}

impl std::fmt::Display for Edition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Edition::Core => "core",
            Edition::Cat => "cat",
        })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Packages => "packages",
            Method::Compose => "compose",
        })
    }
}

/// The operating system of the host: what Canopsis supports for its era (CentOS 7 up to
/// 23.10, RHEL 8 from 23.04), and which package manager the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// CentOS 7: yum (glibc 2.17).
    Centos7,
    /// RHEL 8: dnf, and yum as its alias (glibc 2.28).
    Rhel8,
    /// RHEL 9 (AlmaLinux 9 in the vendor's specs): dnf (glibc 2.34), from 24.04.
    Rhel9,
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Os::Centos7 => "CentOS 7",
            Os::Rhel8 => "RHEL 8",
            Os::Rhel9 => "RHEL 9",
        })
    }
}

impl Os {
    fn os_release(self) -> &'static str {
        match self {
            Os::Centos7 => {
                "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n"
            }
            Os::Rhel8 => {
                "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"8.8 (Ootpa)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"8.8\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 8.8 (Ootpa)\"\n"
            }
            Os::Rhel9 => {
                "NAME=\"AlmaLinux\"\nVERSION=\"9.4 (Seafoam Ocelot)\"\nID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"AlmaLinux 9.4 (Seafoam Ocelot)\"\n"
            }
        }
    }

    fn redhat_release(self) -> &'static str {
        match self {
            Os::Centos7 => "CentOS Linux release 7.9.2009 (Core)\n",
            Os::Rhel8 => "Red Hat Enterprise Linux release 8.8 (Ootpa)\n",
            Os::Rhel9 => "AlmaLinux release 9.4 (Seafoam Ocelot)\n",
        }
    }

    /// The `$releasever` of its repositories.
    pub fn release_version(self) -> &'static str {
        match self {
            Os::Centos7 => "7",
            Os::Rhel8 => "8",
            Os::Rhel9 => "9",
        }
    }

    /// Its name in the facts (`centos7`, `rhel8`, `rhel9`).
    pub fn key(self) -> &'static str {
        match self {
            Os::Centos7 => "centos7",
            Os::Rhel8 => "rhel8",
            Os::Rhel9 => "rhel9",
        }
    }

    /// Whether the host has `program` (CentOS 7 has no dnf).
    fn has(self, program: &str) -> bool {
        !(self == Os::Centos7 && program == "/usr/bin/dnf")
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub version: String,
    pub edition: Edition,
    pub method: Method,
    pub os: Os,
    /// Where a Compose host keeps its project (the guides name no directory).
    pub compose_dir: String,
}

impl Default for Spec {
    fn default() -> Self {
        Self { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, os: Os::Centos7, compose_dir: compose::DEFAULT_DIR.into() }
    }
}

/// One recorded call of a stubbed program.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
    pub user: String,
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: String,
    /// What a program that reads its commands there got on standard input (`redis-cli`), a
    /// password masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

impl Call {
    /// `program arg1 arg2`, and `<<< line; line` for its input, for comparing call sequences.
    pub fn line(&self) -> String {
        let words = std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        match &self.input {
            Some(input) => format!("{words} <<< {}", input.lines().collect::<Vec<_>>().join("; ")),
            None => words,
        }
    }
}

pub struct SimHost {
    root: PathBuf,
}

pub const GO_ENGINES_VARS: &str = "\
CPS_AMQP_URL=amqp://cpsrabbit:canopsis@localhost/canopsis
CPS_MONGO_URL=mongodb://cpsmongo:canopsis@localhost/canopsis
CPS_REDIS_URL=redis://localhost:6379/0
CPS_INFLUX_URL=http://cpsinflux:canopsis@localhost:8086/canopsis
CPS_DEFAULT_CFG=/opt/canopsis/etc/default_configuration.toml
CPS_API_URL=http://localhost:8082
CPS_OLD_API_URL=http://localhost:8081
";

/// go-engines-vars.conf as the vendor's 24.04 file has it
/// (`community/go-engines-community/systemd/go-engines-vars.conf`): PostgreSQL's main and
/// tech-metrics databases, MongoDB's replica set, Redis with a password.
pub const GO_ENGINES_VARS_24: &str = "\
CPS_MONGO_URL=mongodb://cpsmongo:canopsis@localhost:27017/canopsis?replicaSet=rs0
CPS_AMQP_URL=amqp://cpsrabbit:canopsis@localhost:5672/canopsis
CPS_POSTGRES_URL=postgresql://cpspostgres:canopsis@localhost:5432/canopsis
CPS_REDIS_URL=redis://:canopsis@localhost:6379/0
CPS_API_URL=http://localhost:8082
CPS_POSTGRES_TECH_URL=postgresql://cpspostgres:canopsis@localhost:5432/canopsis_tech_metrics
";

/// The host's go-engines-vars.conf: the 24.04 file from 24.04; before, the older one, with
/// `CPS_POSTGRES_URL` from 4.5 (the installation guide's template adds it then).
fn go_engines_vars(version: &str) -> String {
    let at_least = |v: &str| matches!((facts::Version::parse(version), facts::Version::parse(v)), (Ok(a), Ok(b)) if a >= b);
    if at_least("24.0.0") {
        return GO_ENGINES_VARS_24.to_owned();
    }
    let extra = if at_least("4.5.0") { "CPS_POSTGRES_URL=postgresql://cpspostgres:canopsis@localhost:5432/canopsis\n" } else { "" };
    format!("{GO_ENGINES_VARS}{extra}")
}

const WEBSERVER_CONF: &str = "\
[server]
debug=False
enable_crossdomain_send_events=False
root_directory=~/var/www

[auth]
providers=authkey

[webservices]
canopsis.webcore.services.rest=1
canopsis.webcore.services.event=1
canopsis.webcore.services.entities=1
canopsis.webcore.services.pbehavior=1
canopsis.webcore.services.session=1
";

fn amqp2engines(stack: &str, edition: &str) -> String {
    format!(
        "# amqp2engines ({stack} engines, {edition} edition)\n[engine:cleaner_events]\nevent_processing=canopsis.cleaner.process.event_processing\nnext=dynamic_infos\n\n[engine:dynamic_infos]\nnext=event_filter\n"
    )
}

fn initialisation(edition: &str) -> String {
    format!(
        "# RabbitMQ and MongoDB initialisation ({edition})\n[RabbitMQ]\n\n[[RabbitMQ.queues]]\nname = \"Engine_fifo\"\ndurable = true\n\n[[RabbitMQ.queues]]\nname = \"Engine_che\"\ndurable = true\n"
    )
}

const CHE_DROPIN: &str = "\
[Service]
ExecStart=
ExecStart=/opt/canopsis/bin/engine-che -alwaysFlushEntities -publishQueue Engine_event_filter
";

const AXE_DROPIN: &str = "\
[Service]
Environment=CPS_DEFAULT_CFG=/opt/canopsis/etc/default_configuration.toml
";

/// An operator's canopsis.toml of the 22.10 and 23.x eras: comments and tuned values a step
/// must keep.
const CANOPSIS_TOML: &str = "\
# Canopsis configuration (canopsis-reconfigure reads it).
# Tuned for this site: keep.
[Canopsis.global]
PrefetchCount = 10000
ReconnectTimeoutMilliseconds = 8

[Canopsis.alarm]
# Flapping detection, tuned.
FlappingFreqLimit = 28
FlappingInterval = 3600

[Canopsis.api]
TokenSigningMethod = \"HS256\" # site policy
";

/// The Canopsis version the host's services run: the tag of the Canopsis images the
/// containers run (Compose), `VERSION.txt` where the package writes it (CentOS 7), else the RHEL 8/9 main package's version in the rpm
/// database (those packages ship no VERSION.txt). Empty when neither says.
pub fn installed_version(root: &Path) -> String {
    if let Some(running) = compose::running_version(root) {
        return running;
    }
    let text = fs::read_to_string(root.join("opt/canopsis/VERSION.txt")).unwrap_or_default();
    let from_file = text.trim().trim_start_matches("Canopsis version").trim();
    if !from_file.is_empty() {
        return from_file.to_owned();
    }
    ["canopsis-pro", "canopsis"]
        .iter()
        .find_map(|name| {
            let out = packages::rpm(root).args(["-q", "--qf", "%{VERSION}", name]).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_default()
}

/// Whether `version` is of the YY.MM numbering (22.10 and later).
fn calendar(version: &str) -> bool {
    version.split('.').next().and_then(|m| m.parse::<u64>().ok()).is_some_and(|m| m >= 22)
}

/// The unit instances an installation of `edition` enables at `version` (the facts' units;
/// the RHEL 8 procedures restart them by name).
pub fn units(version: &str, edition: Edition) -> Result<Vec<String>> {
    Ok(facts::Facts::load()?.enabled_units(version, &edition.to_string()))
}

/// The wrapper script of `program`: it locates its host by removing its own logical path
/// from the path it was run by (canup runs it as `SYSROOT/usr/bin/yum`), so the tree works
/// wherever it is copied or moved.
fn wrapper(program: &str) -> String {
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    format!(
        "#!/bin/sh\n# {program} of a canup simulated host: records the call and acts like the real tool (canup-sim).\n\
         case \"$0\" in\n  */{rel}) root=\"${{0%{program}}}\" ;;\n  *) echo \"run me as SYSROOT{program}, not $0\" >&2; exit 127 ;;\nesac\n\
         exec \"$root{STUB_PROGRAM}\" stub --sysroot \"${{root:-/}}\" {name} \"$@\"\n",
        rel = program.trim_start_matches('/'),
    )
}

impl SimHost {
    /// Builds the tree under `root` (which must be empty or absent). `stub` is the
    /// `canup-sim` program, copied into the tree (hard-linked when it can be) for the
    /// wrappers to hand over to.
    pub fn create(root: &Path, spec: &Spec, stub: &Path) -> Result<Self> {
        if fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some()) {
            anyhow::bail!("{} is not empty: a simulated host is made in an empty or new directory", root.display());
        }
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let made = Self::make(&root, spec, stub);
        if made.is_err() {
            // Nothing half-made is left: the directory was empty or new.
            if let Ok(entries) = fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let _ = if entry.path().is_dir() { fs::remove_dir_all(entry.path()) } else { fs::remove_file(entry.path()) };
                }
            }
        }
        made
    }

    fn make(root: &Path, spec: &Spec, stub: &Path) -> Result<Self> {
        let host = Self { root: root.to_path_buf() };
        host.write("/etc/os-release", spec.os.os_release())?;
        // The target the engines' unit is wanted by, as systemd ships it (`systemctl --root`
        // enables units offline against it).
        host.write("/usr/lib/systemd/system/multi-user.target", "[Unit]\nDescription=Multi-User System\n")?;
        host.write("/etc/redhat-release", spec.os.redhat_release())?;
        host.write("/opt/canopsis/etc/go-engines-vars.conf", &go_engines_vars(&spec.version))?;
        host.write("/opt/canopsis/etc/webserver.conf", WEBSERVER_CONF)?;
        host.write("/opt/canopsis/etc/amqp2engines.conf", &amqp2engines("python", "core"))?;
        for stack in ["go", "python"] {
            for ed in ["cat", "core"] {
                host.write(&format!("/opt/canopsis/etc/amqp2engines-{stack}-{ed}.conf.example"), &amqp2engines(stack, ed))?;
            }
        }
        for ed in ["cat", "core"] {
            host.write(&format!("/opt/canopsis/etc/initialisation-{ed}.toml.example"), &initialisation(ed))?;
        }
        host.write("/opt/canopsis/etc/default_configuration.toml", "[Canopsis.global]\nPrefetchCount = 10000\n")?;
        host.write("/etc/systemd/system/canopsis-engine-go@engine-che.service.d/che.conf", CHE_DROPIN)?;
        host.write("/etc/systemd/system/canopsis-engine-go@engine-axe.service.d/axe.conf", AXE_DROPIN)?;
        fs::create_dir_all(host.path("/etc/systemd/system/multi-user.target.wants"))?;
        if calendar(&spec.version) {
            host.write("/opt/canopsis/etc/canopsis.toml", CANOPSIS_TOML)?;
        }
        fs::create_dir_all(host.path("/var/log/canup-sim"))?;
        if spec.method == Method::Packages {
            // The real packages, installed by the real rpm: VERSION.txt, the engines' unit and
            // the migration scripts come from them.
            packages::install(&host.root, &spec.version, spec.os.key(), &spec.edition.to_string())?;
            // The engines of the edition, enabled as the installation guide does (the RHEL 8
            // procedure restarts them by name): linked to their own unit file where the
            // package ships one, else to the engines' template.
            // A 3.x site of the Go stack (its che and axe engines have drop-ins): their units
            // enabled, which is how canopsinit's `--canopsis-stack` is told.
            let go_3x = if spec.version.starts_with("3.") {
                vec!["canopsis-engine-go@engine-che".to_owned(), "canopsis-engine-go@engine-axe".to_owned()]
            } else {
                vec![]
            };
            for unit in units(&spec.version, spec.edition)?.into_iter().chain(go_3x) {
                let own = format!("/usr/lib/systemd/system/{unit}.service");
                let target = match (host.path(&own).is_file(), unit.starts_with("canopsis-engine-go@")) {
                    (true, _) => own,
                    (false, true) => packages::ENGINE_UNIT.to_owned(),
                    // Not shipped for this OS (Pro's SNMP engine is RHEL 8's): not enabled.
                    (false, false) => continue,
                };
                std::os::unix::fs::symlink(target, host.path(&format!("/etc/systemd/system/multi-user.target.wants/{unit}.service")))?;
            }
        } else {
            // A host rpm database that holds no Canopsis; the containers run the release.
            packages::init(&host.root)?;
            if spec.version.starts_with("4.") {
                for script in MIGRATIONS {
                    host.write(&format!("/opt/canopsis/share/migrations/mongodb/{script}"), &format!("// {script}\nprint('migrated {script}');\n"))?;
                }
            }
            let edition = spec.edition.to_string();
            let reference = compose::write_reference(&host.root, &spec.compose_dir, &spec.version, &edition)?;
            // What the era's guide has the operator export before running Compose: the edition
            // the files read (`${CPS_EDITION}.env`).
            let env: Vec<(String, String)> = reference.layout.cps_edition.map(|e| ("CPS_EDITION".to_owned(), e)).into_iter().collect();
            host.write(compose::OPERATOR_ENV, &env.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>())?;
            compose::up(&host.root, &spec.compose_dir, &env)?;
        }
        let copy = host.path(STUB_PROGRAM);
        fs::create_dir_all(copy.parent().unwrap_or(&host.root))?;
        if fs::hard_link(stub, &copy).is_err() {
            fs::copy(stub, &copy).with_context(|| format!("copying the stub program {} into {}", stub.display(), copy.display()))?;
        }
        host.write("/var/lib/canup-sim/os", spec.os.release_version())?;
        let v24 = matches!((facts::Version::parse(&spec.version), facts::Version::parse("24.0.0")), (Ok(a), Ok(b)) if a >= b);
        let shell = |p: &&&str| match **p {
            "/usr/bin/mongo" => !v24,
            "/usr/bin/mongosh" => v24,
            _ => true,
        };
        for program in PROGRAMS.iter().filter(|p| spec.os.has(p)).filter(shell) {
            host.write(program, &wrapper(program))?;
            fs::set_permissions(host.path(program), fs::Permissions::from_mode(0o755))?;
        }
        Ok(host)
    }

    /// A simulated host made earlier (by [`SimHost::create`] or `canup-sim create`), wherever
    /// it has been copied or moved since.
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.canonicalize().with_context(|| format!("simulated host {}", root.display()))?;
        let host = Self { root };
        if !host.path(STUB_PROGRAM).is_file() {
            anyhow::bail!("{} is not a simulated host (no {STUB_PROGRAM}): make one with `canup-sim create`", host.root.display());
        }
        Ok(host)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real location of a path as a step names it.
    pub fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    pub fn write(&self, logical: &str, content: &str) -> Result<()> {
        let p = self.path(logical);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&p, content).with_context(|| format!("writing {}", p.display()))
    }

    /// Points the host's Redis at `url` (a real `redis-server` in tests): `CPS_REDIS_URL` of
    /// go-engines-vars.conf, and of compose.env on a Compose host. Fails when neither names one.
    pub fn set_redis_url(&self, url: &str) -> Result<()> {
        self.set_engines_var("CPS_REDIS_URL", url)
    }

    /// Points the host's PostgreSQL at `url` (a real server in tests): `CPS_POSTGRES_URL`.
    pub fn set_postgres_url(&self, url: &str) -> Result<()> {
        self.set_engines_var("CPS_POSTGRES_URL", url)
    }

    fn set_engines_var(&self, var: &str, url: &str) -> Result<()> {
        let mut set = false;
        let compose_env = format!("{}/compose.env", self.compose_dir());
        let prefix = format!("{var}=");
        for file in ["/opt/canopsis/etc/go-engines-vars.conf", compose_env.as_str()] {
            let Ok(text) = self.read(file) else { continue };
            let lines: Vec<String> = text.lines().map(|l| if l.starts_with(&prefix) { format!("{prefix}{url}") } else { l.to_owned() }).collect();
            set |= text.lines().any(|l| l.starts_with(&prefix));
            self.write(file, &(lines.join("\n") + "\n"))?;
        }
        anyhow::ensure!(set, "{} has no {var} to set", self.root.display());
        Ok(())
    }

    pub fn read(&self, logical: &str) -> Result<String> {
        let p = self.path(logical);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The calls recorded so far, in order.
    pub fn calls(&self) -> Result<Vec<Call>> {
        let text = match fs::read_to_string(self.path(CALL_LOG)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("call log line {l:?}"))).collect()
    }

    /// Every file of the tree with its content (the call log excluded), for comparing end
    /// states.
    pub fn snapshot(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                let logical = format!("/{}", path.strip_prefix(&self.root)?.display());
                if PACKAGE_STATE.iter().any(|p| logical.starts_with(p)) {
                    continue;
                }
                let meta = fs::symlink_metadata(&path)?;
                if meta.is_dir() {
                    stack.push(path);
                } else if logical != CALL_LOG && logical != STUB_PROGRAM {
                    let content = if meta.is_symlink() {
                        format!("-> {}", fs::read_link(&path)?.display())
                    } else if !meta.is_file() {
                        // A FIFO or a device (hostile-case fixtures): reading it would block.
                        format!("special file, mode {:o}", std::os::unix::fs::MetadataExt::mode(&meta))
                    } else {
                        String::from_utf8_lossy(&fs::read(&path)?).into_owned()
                    };
                    out.insert(logical, content);
                }
            }
        }
        out.insert(INSTALLED_PACKAGES.to_owned(), packages::installed(&self.root)?.join("\n"));
        Ok(out)
    }

    /// `docker-compose config` (Debian's Compose v1, the real one) on the host's Compose
    /// project, with the environment the operator exports: `Ok` with the resolved
    /// configuration when the files are valid Compose, otherwise the error naming what is
    /// wrong.
    pub fn compose_config(&self) -> Result<String> {
        let env: Vec<(String, String)> =
            self.read(compose::OPERATOR_ENV).unwrap_or_default().lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        compose::config(&self.root, &self.compose_dir(), &env)
    }

    /// The Compose project's directory: where the containers were started from.
    pub fn compose_dir(&self) -> String {
        compose::containers(&self.root).first().map_or_else(|| compose::DEFAULT_DIR.to_owned(), |c| c.working_dir.clone())
    }

    /// The installed packages (`name-version-release.arch`), from the real rpm database.
    pub fn installed_packages(&self) -> Result<Vec<String>> {
        packages::installed(&self.root)
    }
}
