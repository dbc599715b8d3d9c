//! The backup phase: before a run's first change, canup saves what it would need to undo the
//! run (`canup rollback`): the installed packages, the configuration directories, and dumps of
//! the databases the plan's steps migrate. Planned with the rest (each item with its size
//! estimate and destination, refused early when the destination lacks the space), taken after
//! the operator confirmed and every module verified, before the first step.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod set;

use crate::capabilities::database::{self, Connection, Engine, Transfer};
use crate::capabilities::exec::{self, ExecOutput, ExecRequest, TimeLimit, Watch};
use crate::capabilities::fs as cap_fs;
use crate::config::DumpPolicy;
use crate::manifest::Method;
use crate::plan::Plan;
use crate::sysroot::Sysroot;
use crate::ui::{Level, Ui};
use set::{BackupSet, Dump, NotDumped, Package, SavedConfigFile, SavedDir};

use super::{Session, UpgradeError};

/// The databases canup can dump, when `[backup] databases = "always"`.
const DUMPED_ENGINES: &[&str] = &["postgres", "mongo"];

/// The largest configuration file saved (the directories hold settings, not data).
const MAX_CONFIG_FILE: usize = 64 << 20;

/// What the backup phase will take, before it is taken.
#[derive(Debug)]
pub struct BackupPlan {
    /// The backup directory (`[backup] dir`); the set goes to `dir/RUN/`.
    pub dir: PathBuf,
    pub items: Vec<Item>,
    pub asked: Vec<String>,
    pub not_dumped: Vec<NotDumped>,
    /// Bytes free on the destination, and how many must stay free.
    pub free: u64,
    pub reserve: u64,
    /// A resumed run's set, already taken: nothing is taken again.
    pub taken: Option<String>,
}

#[derive(Debug)]
pub struct Item {
    /// What the operator reads (`dump of postgres (postgresql://canopsis@db:5432/canopsis)`).
    pub what: String,
    pub estimate: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Packages,
    Config(String),
    Dump(Connection),
}

impl BackupPlan {
    pub fn total(&self) -> u64 {
        self.items.iter().map(|i| i.estimate).sum()
    }

    /// Lines for the plan's `backup:` phase.
    pub fn describe(&self) -> Vec<String> {
        if let Some(taken) = &self.taken {
            return vec![format!("taken at {taken} (the run's set in {})", self.dir.display())];
        }
        let mut lines: Vec<String> = self.items.iter().map(|i| format!("{} (about {}) → {}", i.what, size(i.estimate), self.dir.display())).collect();
        lines.extend(self.not_dumped.iter().map(|n| format!("no dump of {}: {}", n.endpoint, n.why)));
        lines.push(format!("{} free there; {} in all, and {} kept free ([backup] reserve_mib)", size(self.free), size(self.total()), size(self.reserve)));
        lines
    }
}

/// Bytes for a person.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The endpoints the plan's steps migrate: those they ask a backup of, and those they may
/// write to with a database script.
fn asked(plan: &Plan) -> Vec<String> {
    let mut asked: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|p| {
            p.step.manifest.backup.iter().cloned().chain(p.step.manifest.capabilities.database.iter().filter(|d| d.write).map(|d| d.endpoint.clone()))
        })
        .collect();
    asked.sort();
    asked.dedup();
    asked
}

/// The configuration directories saved: the operator's, else the method's.
fn config_dirs(session: &Session, method: Method) -> Vec<String> {
    match (&session.config.backup.config_dirs, method) {
        (Some(dirs), _) => dirs.clone(),
        (None, Method::Packages) => vec!["/opt/canopsis/etc".to_owned()],
        (None, Method::Compose) => vec![session.config.compose_dir()],
    }
}

/// Plans the backup phase of `plan` (run `run`, when resumed, may already have its set).
pub async fn plan(session: &Session, plan: &Plan, run: Option<&str>) -> Result<BackupPlan, UpgradeError> {
    let dir = session.config.backup_dir();
    let backup = &session.config.backup;
    let asked = asked(plan);
    let failed = |why: String| UpgradeError::Backup(why);
    if let Some(run) = run
        && let Some(set) = BackupSet::read(&dir, run).map_err(|e| failed(format!("reading the backup set of run {run} in {}: {e}", dir.display())))?
    {
        return Ok(BackupPlan { dir, items: Vec::new(), asked, not_dumped: set.not_dumped, free: 0, reserve: 0, taken: Some(set.taken) });
    }
    let mut items = Vec::new();
    if plan.method == Method::Packages {
        // A line per package: tens of kilobytes on any host.
        items.push(Item { what: "the installed packages (rpm -qa)".into(), estimate: 64 << 10, kind: Kind::Packages });
    }
    for d in config_dirs(session, plan.method) {
        let files = walk(&session.sysroot, &d).map_err(|e| failed(format!("configuration directory {d}: {e}")))?.0;
        items.push(Item {
            what: format!("configuration directory {d} ({} files)", files.len()),
            estimate: files.iter().map(|f| f.1).sum(),
            kind: Kind::Config(d),
        });
    }
    let wanted: Vec<String> = match backup.databases.unwrap_or_default() {
        DumpPolicy::Asked => asked.clone(),
        DumpPolicy::Always => DUMPED_ENGINES.iter().map(|s| s.to_string()).chain(asked.iter().cloned()).collect(),
        DumpPolicy::Never => Vec::new(),
    };
    let mut not_dumped = Vec::new();
    if backup.databases == Some(DumpPolicy::Never) {
        not_dumped.extend(asked.iter().map(|e| NotDumped { endpoint: e.clone(), why: "[backup] databases = \"never\" in canup.toml".into() }));
    }
    let (mut seen, mut absent) = (Vec::new(), Vec::new());
    for endpoint in wanted {
        if seen.contains(&endpoint) {
            continue;
        }
        seen.push(endpoint.clone());
        if plan.method == Method::Compose {
            // The databases are in the project's containers, which the host's clients do not
            // reach by the names in compose.env.
            not_dumped.push(NotDumped { endpoint, why: "a Compose installation's databases are dumped with the containers' own tools: not by canup".into() });
            continue;
        }
        let is_asked = asked.contains(&endpoint);
        let conn = match database::resolve(&endpoint, &session.config.databases, &session.sysroot) {
            Ok(c) if matches!(c.engine, Engine::Postgres | Engine::Mongo) => c,
            Ok(_) => {
                not_dumped.push(NotDumped { endpoint, why: "canup dumps PostgreSQL and MongoDB only".into() });
                continue;
            }
            // "always" dumps what the installation has; a database a step migrates must be
            // there, unless the installation has none (4.x before 4.5 has no PostgreSQL).
            Err(e) if !is_asked || matches!(e, database::DatabaseError::Absent { .. }) => {
                if matches!(e, database::DatabaseError::Absent { .. }) {
                    // Nothing there to migrate, nor to restore.
                    absent.push(endpoint.clone());
                }
                not_dumped.push(NotDumped { endpoint, why: e.to_string() });
                continue;
            }
            Err(e) => return Err(failed(format!("the plan's steps migrate database {endpoint}, which canup must dump first: {e}"))),
        };
        let estimate = measure(session, &conn).await.map_err(|e| failed(format!("measuring database {endpoint} before dumping it: {e}")))?;
        items.push(Item { what: format!("dump of {endpoint} ({})", conn.shown()), estimate, kind: Kind::Dump(conn) });
    }
    let asked = asked.into_iter().filter(|e| !absent.contains(e)).collect();
    let free = set::free_bytes(&dir).map_err(|e| failed(format!("the free space of {}: {e}", dir.display())))?;
    let bplan = BackupPlan { dir, items, asked, not_dumped, free, reserve: backup.reserve(), taken: None };
    if bplan.total().saturating_add(bplan.reserve) > bplan.free {
        return Err(UpgradeError::BackupSpace { dir: bplan.dir.display().to_string(), lines: bplan.describe() });
    }
    Ok(bplan)
}

/// Runs one of canup's own commands on the host (not a step's: no policy applies, canup
/// wrote every argument), bounded by the longest time a command may run.
pub(super) async fn host_command(session: &Session, req: &ExecRequest, ui: Option<&dyn Ui>) -> Result<ExecOutput, String> {
    let limits = session.config.limits.resolve().exec;
    let limits = exec::ExecLimits { max_output: limits.max_output.max(16 << 20), ..limits };
    let still = |ran: Duration, line: Option<String>| {
        if let Some(ui) = ui {
            ui.log(
                "canup",
                Level::Info,
                &format!(
                    "{} still running after {}{}",
                    req.program,
                    humantime::format_duration(Duration::from_secs(ran.as_secs())),
                    line.map(|l| format!(": {l}")).unwrap_or_default()
                ),
            );
        }
    };
    let watch = Watch {
        limit: TimeLimit { after: limits.max_timeout, set_by: "[limits] exec_max_timeout_seconds in canup.toml".into() },
        every: limits.progress_every,
        still: Some(&still),
    };
    let out = exec::run(req, &session.sysroot, &limits, None, &watch).await.map_err(|e| e.to_string())?;
    if out.status != Some(0) {
        let said = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr }).trim().to_owned();
        return Err(format!("{} exited with {}: {}", req.program, out.status.map_or("a signal".into(), |s| s.to_string()), crate::ui::cut_middle(&said, 4096)));
    }
    Ok(out)
}

/// The database's size as its server reports it: the estimate of its dump.
async fn measure(session: &Session, conn: &Connection) -> Result<u64, String> {
    let script = match conn.engine {
        Engine::Postgres => "SELECT pg_database_size(current_database())",
        _ => "print(db.stats().dataSize)",
    };
    let inv = database::invocation(conn, script, false, &session.sysroot).map_err(|e| e.to_string())?;
    let out = host_command(session, &inv.request, None).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    last.parse::<f64>().map(|f| f as u64).map_err(|_| format!("its size query answered {last:?}, not a number"))
}

/// A directory's regular files (path, size) and symbolic links.
type Tree = (Vec<(String, u64)>, Vec<String>);

/// The regular files under `logical` (path, size), recursively, and the symbolic links met
/// (not followed). A directory that does not exist has none.
fn walk(sysroot: &Sysroot, logical: &str) -> std::io::Result<Tree> {
    let (mut files, mut links) = (Vec::new(), Vec::new());
    let mut pending = vec![logical.trim_end_matches('/').to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(sysroot.map(Path::new(&dir))) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == logical.trim_end_matches('/') => return Ok((files, links)),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files.push((path, meta.len()));
            } else if meta.file_type().is_symlink() {
                links.push(path);
            }
        }
    }
    files.sort();
    links.sort();
    Ok((files, links))
}

/// The file name of an endpoint's dump in the set.
fn dump_file(endpoint: &str, engine: Engine) -> String {
    let safe: String = endpoint.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}.{}", if engine == Engine::Postgres { "dump" } else { "archive.gz" })
}

fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Mongo => "mongo",
        Engine::Redis => "redis",
    }
}

/// What a dry run lists for the backup phase, where the real run takes it: canup's own work,
/// not a step's, each line naming what is saved and where.
pub fn listing(bplan: &BackupPlan, run: &str) -> Vec<String> {
    if bplan.taken.is_some() {
        return Vec::new();
    }
    let run_dir = bplan.dir.join(run);
    bplan
        .items
        .iter()
        .map(|i| match &i.kind {
            Kind::Packages => {
                format!("back up the installed packages: /usr/bin/rpm -qa --qf {} > {}", set::RPM_QUERY_FORMAT, run_dir.join(set::PACKAGES_FILE).display())
            }
            Kind::Config(d) => format!("back up {d} to {}", run_dir.join(set::CONFIG_DIR).join(d.trim_start_matches('/')).display()),
            Kind::Dump(c) => format!("back up database {} ({}) to {}", c.endpoint, c.shown(), run_dir.join(dump_file(&c.endpoint, c.engine)).display()),
        })
        .collect()
}

/// Takes the planned set into `dir/RUN/`, then removes the sets past `[backup] keep`.
pub async fn take(session: &Session, bplan: &BackupPlan, plan: &Plan, run: &str, ui: &dyn Ui) -> Result<(), UpgradeError> {
    if bplan.taken.is_some() {
        return Ok(());
    }
    let run_dir = bplan.dir.join(run);
    let failed = |what: String| move |e: String| UpgradeError::Backup(format!("{what}: {e}; nothing was changed: fix it and run `canup apply` again"));
    let io = |what: String| move |e: std::io::Error| UpgradeError::Backup(format!("{what}: {e}; nothing was changed: fix it and run `canup apply` again"));
    create_private_dir(&run_dir).map_err(io(format!("creating {}", run_dir.display())))?;
    let mut set = BackupSet {
        run: run.to_owned(),
        taken: String::new(),
        installed: plan.installed.clone(),
        edition: plan.edition,
        method: plan.method,
        packages: None,
        config: Vec::new(),
        dumps: Vec::new(),
        asked: bplan.asked.clone(),
        not_dumped: bplan.not_dumped.clone(),
    };
    for item in &bplan.items {
        ui.log("canup", Level::Info, &format!("backup: {}", item.what));
        match &item.kind {
            Kind::Packages => {
                let list = installed_packages(session).await.map_err(failed("listing the installed packages".into()))?;
                let text: String = list.iter().map(|p| p.line() + "\n").collect();
                let file = Path::new(set::PACKAGES_FILE);
                crate::durable::atomic_replace(&run_dir.join(file), text.as_bytes()).map_err(io(format!("writing {}", run_dir.join(file).display())))?;
                set.packages = Some(set::saved(&run_dir, file).map_err(io("the package list".into()))?);
            }
            Kind::Config(d) => set.config.push(save_dir(&session.sysroot, d, &run_dir).map_err(io(format!("saving configuration directory {d}")))?),
            Kind::Dump(conn) => {
                let file = dump_file(&conn.endpoint, conn.engine);
                let dest = run_dir.join(&file);
                let inv = database::transfer_invocation(conn, Transfer::Dump(&dest)).map_err(|e| UpgradeError::Backup(e.to_string()))?;
                host_command(session, &inv.request, Some(ui)).await.map_err(failed(format!("dumping database {}", conn.endpoint)))?;
                drop(inv);
                let saved = set::saved(&run_dir, Path::new(&file)).map_err(io(format!("the dump of {}", conn.endpoint)))?;
                ui.log("canup", Level::Info, &format!("backup: {} dumped to {} ({})", conn.endpoint, dest.display(), size(saved.bytes)));
                set.dumps.push(Dump { endpoint: conn.endpoint.clone(), engine: engine_name(conn.engine).into(), target: conn.shown(), saved });
            }
        }
    }
    set.taken = crate::journal::now();
    set.write(&bplan.dir).map_err(io(format!("writing {}", run_dir.join(set::SET_FILE).display())))?;
    match set::prune(&bplan.dir, session.config.backup.keep(), run) {
        Ok(removed) => removed.iter().for_each(|p| ui.log("canup", Level::Info, &format!("backup: removed {} ([backup] keep)", p.display()))),
        Err(e) => ui.log("canup", Level::Warn, &format!("backup: removing old sets in {}: {e}", bplan.dir.display())),
    }
    Ok(())
}

/// A directory only root reads: the set holds the databases' content.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Every installed package, as rpm lists them (with the time each was installed).
pub(super) async fn installed_packages(session: &Session) -> Result<Vec<Package>, String> {
    let req = ExecRequest { program: "/usr/bin/rpm".into(), args: vec!["-qa".into(), "--qf".into(), set::RPM_QUERY_FORMAT.into()], ..Default::default() };
    let out = host_command(session, &req, None).await?;
    let mut list: Vec<Package> = String::from_utf8_lossy(&out.stdout).lines().filter_map(Package::parse).collect();
    list.sort();
    Ok(list)
}

/// Copies the regular files of a configuration directory under `config/`, read beneath the
/// sysroot on descriptors (a link planted in the directory is recorded, never followed).
fn save_dir(sysroot: &Sysroot, logical: &str, run_dir: &Path) -> std::io::Result<SavedDir> {
    let (files, links) = walk(sysroot, logical)?;
    let mut saved = Vec::new();
    for (path, _) in files {
        let data = cap_fs::read_for_host(sysroot, &path, MAX_CONFIG_FILE)?;
        let mode = std::fs::symlink_metadata(sysroot.map(Path::new(&path))).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)?;
        let relative = Path::new(set::CONFIG_DIR).join(path.trim_start_matches('/'));
        let dest = run_dir.join(&relative);
        if let Some(parent) = dest.parent() {
            create_private_dir(parent)?;
        }
        crate::durable::atomic_replace(&dest, &data)?;
        saved.push(SavedConfigFile { path, mode, saved: set::saved(run_dir, &relative)? });
    }
    Ok(SavedDir { path: logical.to_owned(), files: saved, links })
}
