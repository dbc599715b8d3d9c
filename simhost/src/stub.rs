//! The stub behind every program of the simulated host (see the library's doc).
//! Usage (from the wrapper scripts): `canup-sim stub --sysroot DIR NAME ARGS...`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use canup_sim::{CALL_LOG, Call, packages};

struct Sim {
    root: PathBuf,
    user: String,
}

impl Sim {
    fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }
    fn read(&self, logical: &str) -> String {
        fs::read_to_string(self.path(logical)).unwrap_or_default()
    }
    fn write(&self, logical: &str, content: &str) {
        let p = self.path(logical);
        if let Some(d) = p.parent() {
            let _ = fs::create_dir_all(d);
        }
        if let Err(e) = fs::write(&p, content) {
            eprintln!("canup-sim: cannot write {}: {e}", p.display());
        }
    }
    fn append(&self, logical: &str, line: &str) {
        let mut content = self.read(logical);
        content.push_str(line);
        content.push('\n');
        self.write(logical, &content);
    }
    fn installed_version(&self) -> String {
        canup_sim::installed_version(&self.root)
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(1)
}

/// `argv`: `--sysroot DIR NAME ARGS...`.
pub fn run(mut argv: Vec<String>) -> ExitCode {
    if argv.len() < 3 || argv[0] != "--sysroot" {
        return fail("usage: canup-sim stub --sysroot DIR NAME ARGS...");
    }
    let root = PathBuf::from(argv.remove(1));
    argv.remove(0);
    let name = argv.remove(0);
    let args = argv;
    let user = std::env::var("CANUP_SIMULATED_USER").unwrap_or_else(|_| "root".into());
    let sim = Sim { root, user };
    // The wrapper's shell adds PWD (and may add SHLVL, _): plumbing of the fixture, not what
    // canup passed, so it is not recorded.
    let env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| !matches!(k.as_str(), "CANUP_SIMULATED_USER" | "PWD" | "OLDPWD" | "SHLVL" | "_")).collect();
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    // canup's connection files (credentials for psql, the connecting script for mongo) have
    // random names: recorded by role, so that runs compare.
    let connection = |v: &String| if v.contains("/canup-db-") { "(canup's connection file)".to_owned() } else { v.clone() };
    let env = env.into_iter().map(|(k, v)| (k, connection(&v))).collect();
    // redis-cli reads its commands on standard input (canup's database endpoint): recorded,
    // `AUTH` masked, then handed to the real one.
    // The package managers' `shell` reads its transaction there too (a rollback's).
    let reads_input = name == "redis-cli" || (matches!(name.as_str(), "dnf" | "yum") && args.iter().any(|a| a == "shell"));
    let input = reads_input.then(|| {
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        text
    });
    let shown = input.as_ref().map(|t| t.lines().map(|l| if l.starts_with("AUTH ") { "AUTH ***" } else { l }).collect::<Vec<_>>().join("\n"));
    let call = Call { program: name.clone(), args: args.iter().map(connection).collect(), user: sim.user.clone(), env, cwd, input: shown };
    if let Ok(line) = serde_json::to_string(&call) {
        let log = sim.path(CALL_LOG);
        let _ = fs::create_dir_all(log.parent().unwrap_or(Path::new("/")));
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&log) {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    // Tests freeze a program mid-call (to kill canup while it runs) by creating
    // /var/lib/canup-sim/block-NAME; the stub says it is blocked and waits for its removal.
    let block = sim.path(&format!("/var/lib/canup-sim/block-{name}"));
    if block.exists() {
        sim.write(&format!("/var/lib/canup-sim/blocked-{name}"), &std::process::id().to_string());
        let start = std::time::Instant::now();
        while block.exists() && start.elapsed() < std::time::Duration::from_secs(120) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // Tests make a program fail (a step after the update, say) by creating
    // /var/lib/canup-sim/fail-NAME: the call is recorded, then fails as the real one would.
    if sim.path(&format!("/var/lib/canup-sim/fail-{name}")).exists() {
        return fail(&format!("{name}: failed (simulated fault: /var/lib/canup-sim/fail-{name})"));
    }
    match name.as_str() {
        "yum" | "dnf" if input.is_some() => {
            feed(packages::dnf(&sim.root, sim.read("/var/lib/canup-sim/os").trim()).args(&args), input.unwrap_or_default().as_bytes())
        }
        "yum" | "dnf" => dnf(&sim, &args),
        "rpm" => hand_over(packages::rpm(&sim.root).args(&args)),
        "su" => su(&sim, &args),
        "systemctl" => systemctl(&sim, &args),
        "canoctl" => match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["restart"] => {
                sim.append("/var/lib/canup-sim/canoctl-restarts", &sim.installed_version());
                println!("Restarting Canopsis engines... done");
                ExitCode::SUCCESS
            }
            [verb @ ("stop" | "start")] => {
                // The engines' state: what a later restart or start changes.
                sim.write("/var/lib/canup-sim/engines", &format!("{}\n", if *verb == "stop" { "stopped" } else { "running" }));
                println!("canoctl {verb}: done");
                ExitCode::SUCCESS
            }
            _ => fail("canoctl (simulated): only restart, stop and start are supported"),
        },
        // The real redis-cli, against the server the step names (a real redis-server in tests).
        "redis-cli" => feed(Command::new("redis-cli").args(&args), input.unwrap_or_default().as_bytes()),
        "docker" => match args.split_first() {
            Some((sub, rest)) if sub == "compose" => compose(&sim, rest),
            Some((sub, rest)) if sub == "ps" => match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["--format", format] => {
                    print!("{}", canup_sim::compose::ps(&sim.root, format));
                    ExitCode::SUCCESS
                }
                _ => fail("docker ps (simulated): only --format FORMAT is supported"),
            },
            _ => fail("docker (simulated): only 'docker compose' and 'docker ps' are supported"),
        },
        "docker-compose" => compose(&sim, &args),
        "mongo" | "mongosh" => mongo(&sim, &args),
        // The real psql, against the server canup connected it to (a real PostgreSQL in tests).
        "psql" => hand_over(Command::new("psql").args(&args)),
        // The real pg_dump and pg_restore, likewise; the dump file is canup's, outside the root.
        "pg_dump" | "pg_restore" => hand_over(Command::new(&name).args(&args)),
        "mongodump" | "mongorestore" => mongo_archive(&sim, &name, &args),
        "canopsinit" => {
            if sim.user != "canopsis" {
                return fail("canopsinit must run as the canopsis user (su - canopsis -c ...)");
            }
            sim.write("/opt/canopsis/var/canopsinit.last", &format!("{} {}\n", sim.installed_version(), args.join(" ")));
            println!("canopsinit: done");
            ExitCode::SUCCESS
        }
        "init" => {
            if std::env::var("CPS_AMQP_URL").is_err() {
                return fail("init: CPS_AMQP_URL is not set (export go-engines-vars.conf first)");
            }
            let conf = match args.iter().position(|a| a == "-conf").and_then(|i| args.get(i + 1)) {
                Some(c) => c.clone(),
                None => return fail("init: -conf FILE is required"),
            };
            if !sim.path(&conf).is_file() {
                return fail(&format!("init: {conf} not found"));
            }
            // Like the real init, it creates what the file describes; doing it again changes nothing.
            sim.write("/var/lib/canup-sim/init-applied", &format!("{conf}\n"));
            ExitCode::SUCCESS
        }
        "canopsis-reconfigure" => {
            for var in ["CPS_AMQP_URL", "CPS_MONGO_URL"] {
                if std::env::var(var).is_err() {
                    return fail(&format!("canopsis-reconfigure: {var} is not set (export go-engines-vars.conf first)"));
                }
            }
            // As the real one (main.go: os.ReadFile of -override's file): a missing file fails.
            if let Some(file) = args.iter().position(|a| a == "-override").and_then(|i| args.get(i + 1))
                && !sim.root.join(file.trim_start_matches('/')).is_file()
            {
                return fail(&format!("canopsis-reconfigure: open {file}: no such file or directory"));
            }
            if args.iter().any(|a| a == "-migrate-postgres=true")
                && let Err(e) = migrate_postgres(&sim, &args)
            {
                return fail(&format!("canopsis-reconfigure: {e}"));
            }
            sim.write("/opt/canopsis/var/reconfigured", &format!("{}\n", sim.installed_version()));
            ExitCode::SUCCESS
        }
        other => fail(&format!("canup-sim: unknown program {other}")),
    }
}

/// Docker Compose, v1 (`docker-compose`) or v2 (`docker compose`), on the project of the
/// working directory: `up -d` has the real Compose validate and resolve it (with the
/// environment canup gave the command: `CPS_EDITION`) and runs its images (see
/// `canup_sim::compose`); `down` and `up -d redis` are recorded; `exec -T redis redis-cli …`
/// runs the real redis-cli against the server of `CPS_REDIS_URL` in compose.env, as the
/// container's would.
fn compose(sim: &Sim, args: &[String]) -> ExitCode {
    let Some(dir) = std::env::current_dir().ok().and_then(|d| d.strip_prefix(&sim.root).ok().map(|p| format!("/{}", p.display()))) else {
        return fail("docker compose (simulated): run it in the Compose project's directory of the host");
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["up", "-d"] => match canup_sim::compose::up(&sim.root, &dir, &[]) {
            Ok(_) => {
                sim.write("/var/lib/canup-sim/engines", "running\n");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{e:#}")),
        },
        ["down"] => {
            sim.write("/var/lib/canup-sim/engines", "stopped\n");
            ExitCode::SUCCESS
        }
        ["up", "-d", "redis"] => ExitCode::SUCCESS,
        ["exec", "-T", "redis", "redis-cli", rest @ ..] => {
            let env = sim.read(&format!("{dir}/compose.env"));
            let Some(url) = env.lines().find_map(|l| l.trim().strip_prefix("CPS_REDIS_URL=")) else {
                return fail("docker compose exec redis (simulated): compose.env has no CPS_REDIS_URL");
            };
            hand_over(Command::new("redis-cli").arg("-u").arg(url.trim()).args(rest))
        }
        _ => fail(&format!("docker compose (simulated): unsupported {}", args.join(" "))),
    }
}

/// `yum` (CentOS 7) and `dnf` (RHEL 8): the real dnf run against the host's root, its
/// repositories those of the root's `/etc/yum.repos.d`. Debian has no yum; dnf takes yum's
/// syntax for what the procedures run (`update`, `makecache`, `--disablerepo`/`--enablerepo`).
fn dnf(sim: &Sim, args: &[String]) -> ExitCode {
    let release = sim.read("/var/lib/canup-sim/os");
    hand_over(packages::dnf(&sim.root, release.trim()).args(args))
}

/// Runs the real tool with the caller's stdin, stdout and stderr and exits with its status.
fn hand_over(command: &mut Command) -> ExitCode {
    match command.status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))),
        Err(e) => fail(&format!("cannot run {command:?}: {e} (apt-get install rpm dnf)")),
    }
}

/// Like [`hand_over`], with `input` on the program's standard input.
fn feed(command: &mut Command, input: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut child = match command.stdin(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot run {command:?}: {e}")),
    };
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(input);
    }
    match child.wait() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))),
        Err(e) => fail(&format!("waiting for {command:?}: {e}")),
    }
}

/// `su [-] USER -c "COMMAND"`: runs COMMAND (split like a shell would) as USER, with a login
/// environment as `su -` gives.
fn su(sim: &Sim, args: &[String]) -> ExitCode {
    let rest: Vec<&String> = args.iter().filter(|a| *a != "-" && *a != "-l").collect();
    let (user, command) = match rest.as_slice() {
        [user, flag, command] if flag.as_str() == "-c" => (user.as_str(), command.as_str()),
        _ => return fail("su (simulated): expected su - USER -c COMMAND"),
    };
    let Some(words) = shlex::split(command) else { return fail("su: unbalanced quotes") };
    let Some((program, program_args)) = words.split_first() else { return fail("su: empty command") };
    let found = ["/opt/canopsis/bin", "/usr/bin", "/usr/sbin", "/bin"]
        .iter()
        .map(|d| if program.starts_with('/') { sim.path(program) } else { sim.path(&format!("{d}/{program}")) })
        .find(|p| p.is_file());
    let Some(path) = found else { return fail(&format!("su: {program}: command not found")) };
    let status = Command::new(path)
        .args(program_args)
        .env_clear()
        .env("CANUP_SIMULATED_USER", user)
        .env("USER", user)
        .env("HOME", format!("/opt/{user}"))
        .env("PATH", "/opt/canopsis/bin:/usr/bin:/bin")
        .status();
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
        Err(e) => fail(&format!("su: {e}")),
    }
}

fn systemctl(sim: &Sim, args: &[String]) -> ExitCode {
    let unit_file = |u: &str| if u.contains('.') { u.to_owned() } else { format!("{u}.service") };
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["daemon-reload"] => {
            sim.append("/var/lib/canup-sim/daemon-reloads", "reload");
            ExitCode::SUCCESS
        }
        // Enabling is files only: the real systemctl does it offline in the root.
        [verb @ ("enable" | "is-enabled" | "disable"), unit] => hand_over(
            Command::new("systemctl")
                .arg(format!("--root={}", sim.root.display()))
                .args([verb.to_string(), unit_file(unit)])
                .env_clear()
                .env("LC_ALL", "C.UTF-8"),
        ),
        [verb @ ("start" | "stop" | "restart"), _unit] => {
            sim.append("/var/lib/canup-sim/systemctl-actions", &args.join(" "));
            let _ = verb;
            ExitCode::SUCCESS
        }
        _ => fail(&format!("systemctl (simulated): unsupported {}", args.join(" "))),
    }
}

/// Where canopsis-reconfigure reads the PostgreSQL migrations unless told (its flags.go).
const POSTGRES_MIGRATIONS: &str = "/opt/canopsis/share/database/postgres_migrations";

/// What `-migrate-postgres=true` does in the real canopsis-reconfigure (golang-migrate `up`):
/// every `NNN_name.up.sql` of the directory newer than `schema_migrations`' version, in order,
/// each in a transaction with the version it leaves, on the server of `CPS_POSTGRES_URL` (the
/// real psql). The simulated packages ship no migration: a directory without one changes
/// nothing and needs no server.
fn migrate_postgres(sim: &Sim, args: &[String]) -> Result<(), String> {
    let dir = args.iter().position(|a| a == "-postgres-migration-directory").and_then(|i| args.get(i + 1)).map_or(POSTGRES_MIGRATIONS, String::as_str);
    let mut ups: Vec<(u64, PathBuf)> = fs::read_dir(sim.path(dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| {
                    let name = p.file_name()?.to_str()?.to_owned();
                    let version = name.strip_suffix(".up.sql")?.split('_').next()?.parse().ok()?;
                    Some((version, p))
                })
                .collect()
        })
        .unwrap_or_default();
    if ups.is_empty() {
        return Ok(());
    }
    ups.sort();
    let url = std::env::var("CPS_POSTGRES_URL").map_err(|_| "CPS_POSTGRES_URL is not set".to_owned())?;
    let psql = |extra: &[&str]| -> Result<String, String> {
        let out = Command::new("psql")
            .arg(&url)
            .args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align", "-v", "ON_ERROR_STOP=1"])
            .args(extra)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("migration failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    psql(&["-c", "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)"])?;
    let current: u64 =
        psql(&["-c", "SELECT COALESCE(max(version), 0) FROM schema_migrations"])?.parse().map_err(|_| "schema_migrations holds no number".to_owned())?;
    for (version, file) in ups.into_iter().filter(|(v, _)| *v > current) {
        let file = file.display().to_string();
        let record = format!("DELETE FROM schema_migrations; INSERT INTO schema_migrations VALUES ({version}, false)");
        psql(&["--single-transaction", "-f", &file, "-c", &record])?;
        println!("{version}/u {} applied", file.rsplit('/').next().unwrap_or_default());
    }
    Ok(())
}

/// The simulated MongoDB's content: the scripts applied to it, in order.
const MONGO_DATA: &str = "/var/lib/canup-sim/mongo-applied.js";
/// The first line of a simulated archive.
const ARCHIVE_HEADER: &str = "canup-sim mongodump archive\n";

/// `mongodump --archive=FILE --config=CONF` copies the simulated database into FILE;
/// `mongorestore --drop --archive=FILE --config=CONF` replaces it with FILE's. Like the real
/// tools, both need the connection (the URL in the configuration file canup wrote).
fn mongo_archive(sim: &Sim, name: &str, args: &[String]) -> ExitCode {
    let value = |flag: &str| args.iter().find_map(|a| a.strip_prefix(flag)).map(str::to_owned);
    let (Some(archive), Some(config)) = (value("--archive="), value("--config=")) else {
        return fail(&format!("{name} (simulated): expected --archive=FILE and --config=FILE"));
    };
    if !std::fs::read_to_string(&config).is_ok_and(|c| c.starts_with("uri: \"mongodb")) {
        return fail(&format!("{name}: error parsing the configuration file {config}: no uri"));
    }
    if name == "mongodump" {
        let data = sim.read(MONGO_DATA);
        return match std::fs::write(&archive, format!("{ARCHIVE_HEADER}{data}")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("mongodump: writing {archive}: {e}")),
        };
    }
    if !args.iter().any(|a| a == "--drop") {
        return fail("mongorestore (simulated): only --drop restores are supported");
    }
    match std::fs::read_to_string(&archive).ok().and_then(|a| a.strip_prefix(ARCHIVE_HEADER).map(str::to_owned)) {
        Some(data) => {
            sim.write(MONGO_DATA, &data);
            ExitCode::SUCCESS
        }
        None => fail(&format!("mongorestore: {archive} is not an archive")),
    }
}

/// `mongo DB --eval SCRIPT` or a script on stdin: the script is appended to the simulated
/// database's journal of applied scripts. `print(db.stats().dataSize)` answers its size.
fn mongo(sim: &Sim, args: &[String]) -> ExitCode {
    let script = match args.iter().position(|a| a == "--eval") {
        Some(i) => match args.get(i + 1) {
            Some(s) => s.clone(),
            None => return fail("mongo: --eval needs a script"),
        },
        // `--nodb --quiet FILE`, as canup runs a database endpoint's script: the file connects
        // (`db = connect(URL);`, the first line), then holds the step's script.
        None if args.first().is_some_and(|a| a == "--nodb") => {
            let Some(file) = args.last() else { return fail("mongo: --nodb needs a script file") };
            let text = std::fs::read_to_string(file).unwrap_or_default();
            match text.split_once('\n') {
                Some((connect, rest)) if connect.starts_with("db = connect(") => rest.to_owned(),
                _ => return fail("mongo: the script file does not start with db = connect(URL);"),
            }
        }
        None => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                return fail("mongo: cannot read the script from stdin");
            }
            s
        }
    };
    // A test's fault: a script holding the text of `mongo-refuse` fails, as on a database that
    // refuses it.
    let refuse = sim.read("/var/lib/canup-sim/mongo-refuse");
    if !refuse.trim().is_empty() && script.contains(refuse.trim()) {
        return fail(&format!("mongo: script refused (simulated fault: {})", refuse.trim()));
    }
    if script.trim() == "print(db.stats().dataSize)" {
        println!("{}", sim.read(MONGO_DATA).len());
        return ExitCode::SUCCESS;
    }
    sim.append(MONGO_DATA, script.trim());
    println!("WriteResult({{ \"nMatched\" : 1, \"nUpserted\" : 0, \"nModified\" : 1 }})");
    ExitCode::SUCCESS
}
