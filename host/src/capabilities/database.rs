//! The `database` capability: a script run on one of the installation's databases
//! (PostgreSQL, MongoDB, Redis), named by endpoint.
//!
//! A step names the endpoint (`postgres`) and gives the script (SQL, JavaScript, Redis
//! commands); it never sees the URL or the credentials. The host finds them in the operator's
//! `[databases.NAME]` or, by default, where Canopsis itself reads them
//! (`/opt/canopsis/etc/go-engines-vars.conf`: `CPS_POSTGRES_URL`, `CPS_MONGO_URL`,
//! `CPS_REDIS_URL`), and hands them to the client program through its environment or a file
//! only root can read, never through its arguments, which any local user can list with `ps`.
//! Release notes used to put `$CPS_POSTGRES_URL`, password included, into `psql`'s
//! arguments; the steps that had to copy them held the password too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use url::Url;

use super::exec::ExecRequest;
use super::{Denial, Grant};
use crate::sysroot::Sysroot;

/// One endpoint a step may run scripts on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseRule {
    /// `postgres`, `postgres-tech`, `mongo`, `redis`, or a name of the operator's `[databases]`.
    pub endpoint: String,
    /// Scripts that change data. Without it, only requests the step marks read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
}

impl Grant {
    /// The single checkpoint for `database`.
    pub fn check_database(&self, endpoint: &str, write: bool) -> Result<(), Denial> {
        let what = || format!("{} script on database endpoint {endpoint}", if write { "a changing" } else { "a read-only" });
        self.both(what, |side| side.database.iter().any(|r| r.endpoint == endpoint && (r.write || !write)))
    }
}

/// The engine behind an endpoint, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mongo,
    Redis,
}

/// An endpoint as the operator configures it (`[databases.postgres]`). Every field is
/// optional: without `url`, the URL is the installation's own (the variable of
/// go-engines-vars.conf the Canopsis engines read); a password from a file or an environment
/// variable of canup's replaces the URL's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEndpoint {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

pub type Databases = BTreeMap<String, DatabaseEndpoint>;

/// Where the Canopsis engines read their databases' URLs (the packages' file; the procedures
/// export it before `canopsis-reconfigure`).
pub const GO_ENGINES_VARS: &str = "/opt/canopsis/etc/go-engines-vars.conf";

/// The endpoints every installation has, and the variable of [`GO_ENGINES_VARS`] naming each.
pub const CANOPSIS_DATABASES: &[(&str, &str)] =
    &[("postgres", "CPS_POSTGRES_URL"), ("postgres-tech", "CPS_POSTGRES_TECH_URL"), ("mongo", "CPS_MONGO_URL"), ("redis", "CPS_REDIS_URL")];

#[derive(Debug, Error)]
pub enum DatabaseError {
    #[error("database endpoint {0} is neither configured in [databases] of canup.toml nor one of Canopsis's (postgres, postgres-tech, mongo, redis)")]
    Unknown(String),
    #[error("database endpoint {endpoint}: {why}")]
    BadConfig { endpoint: String, why: String },
    #[error("database endpoint {endpoint}: {why}")]
    Refused { endpoint: String, why: String },
    /// The installation has no such database (4.x before 4.5 has no PostgreSQL).
    #[error("database endpoint {endpoint}: no url in [databases.{endpoint}] of canup.toml, and {GO_ENGINES_VARS} sets no {var}")]
    Absent { endpoint: String, var: String },
    #[error("database endpoint {endpoint}: cannot write its connection file: {source}")]
    TempFile { endpoint: String, source: std::io::Error },
}

/// An endpoint's connection: the engine and the full URL, credentials included (host side only).
#[derive(Clone)]
pub struct Connection {
    pub endpoint: String,
    pub engine: Engine,
    url: Url,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({}, {})", self.endpoint, self.shown())
    }
}

impl Connection {
    /// The URL without its password: what the audit and the operator see.
    pub fn shown(&self) -> String {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        u.to_string()
    }
}

/// `KEY=value` lines as systemd's `EnvironmentFile=` and the procedures' `set -o allexport;
/// source` read them: comments and blank lines skipped, an `export ` prefix and one pair of
/// quotes around the value removed.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = [('"', '"'), ('\'', '\'')].iter().find_map(|(a, b)| v.strip_prefix(*a).and_then(|r| r.strip_suffix(*b))).unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// The connection of `endpoint`: the operator's `[databases.NAME]`, else the installation's
/// own variable in go-engines-vars.conf (read under `sysroot`).
pub fn resolve(endpoint: &str, databases: &Databases, sysroot: &Sysroot) -> Result<Connection, DatabaseError> {
    let bad = |why: String| DatabaseError::BadConfig { endpoint: endpoint.to_owned(), why };
    let configured = databases.get(endpoint);
    let text = match configured.and_then(|c| c.url.clone()) {
        Some(url) => url,
        None => {
            let var = CANOPSIS_DATABASES.iter().find(|(n, _)| *n == endpoint).map(|(_, v)| *v).ok_or_else(|| DatabaseError::Unknown(endpoint.to_owned()))?;
            let vars = super::fs::read_for_host(sysroot, GO_ENGINES_VARS, 1 << 20)
                .map_err(|e| bad(format!("no url in [databases.{endpoint}] of canup.toml, and {GO_ENGINES_VARS} cannot be read ({e})")))?;
            parse_env_file(&String::from_utf8_lossy(&vars))
                .into_iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v)
                .ok_or_else(|| DatabaseError::Absent { endpoint: endpoint.to_owned(), var: var.to_owned() })?
        }
    };
    let mut url = Url::parse(&text).map_err(|e| bad(format!("its URL is not a URL ({e})")))?;
    let engine = match url.scheme() {
        "postgres" | "postgresql" => Engine::Postgres,
        "mongodb" | "mongodb+srv" => Engine::Mongo,
        "redis" | "rediss" => Engine::Redis,
        other => return Err(bad(format!("scheme {other}:// is none of postgresql://, mongodb://, redis://"))),
    };
    if let Some(c) = configured
        && let Some(password) = super::http::read_secret(endpoint, &c.password_file, &c.password_env).map_err(|e| bad(e.to_string()))?
    {
        url.set_password(Some(&password)).map_err(|()| bad("its URL cannot carry a password".into()))?;
    }
    Ok(Connection { endpoint: endpoint.to_owned(), engine, url })
}

/// The client command for one script, and the files holding its credentials (removed when
/// dropped).
#[derive(Debug)]
pub struct Invocation {
    pub request: ExecRequest,
    pub secrets: Vec<tempfile::NamedTempFile>,
    /// Lines the host added in front of the client's answer (Redis's `OK` to `AUTH`).
    pub skip_lines: usize,
}

/// Who the database clients run as (see [`invocation`]).
pub const CLIENT_USER: &str = "canopsis";

/// Redis commands that only read: the only ones a read-only request may hold.
const REDIS_READS: &[&str] = &[
    "INFO", "PING", "DBSIZE", "SELECT", "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "SCAN", "KEYS", "HGET", "HGETALL", "HKEYS", "HLEN", "LLEN",
    "LRANGE", "SCARD", "SMEMBERS", "ZCARD", "ZRANGE",
];

/// A file only root can read, holding `text`.
fn secret_file(endpoint: &str, text: &str) -> Result<tempfile::NamedTempFile, DatabaseError> {
    let err = |source| DatabaseError::TempFile { endpoint: endpoint.to_owned(), source };
    let mut f = tempfile::Builder::new().prefix("canup-db-").tempfile().map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|()| f.flush()).map_err(err)?;
    Ok(f)
}

fn decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `psql`'s password file line: `*:*:*:*:password`, with `:` and `\` escaped.
fn pgpass(password: &str) -> String {
    format!("*:*:*:*:{}\n", password.replace('\\', "\\\\").replace(':', "\\:"))
}

/// A value in double quotes as redis-cli reads a command line.
fn redis_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The client program of `engine` as the step would name it. MongoDB's shell is `mongosh`
/// from Canopsis 24.04 (« Les appels au shell de mongoDB via la commande `mongo` ont été
/// remplacés par des appels via la commande `mongosh` »), the legacy `mongo` before: the one
/// the host has, `mongosh` when both are there.
pub fn client(engine: Engine, sysroot: &Sysroot) -> &'static str {
    match engine {
        Engine::Postgres => "/usr/bin/psql",
        Engine::Redis => "/usr/bin/redis-cli",
        Engine::Mongo if sysroot.map(Path::new("/usr/bin/mongosh")).exists() => "/usr/bin/mongosh",
        Engine::Mongo => "/usr/bin/mongo",
    }
}

/// Variables of a client's environment.
type Env = Vec<(String, String)>;

/// libpq's own variables for `conn` (so that nothing of the URL is an argument), and the
/// password file they name.
fn postgres_env(conn: &Connection, refused: &dyn Fn(String) -> DatabaseError) -> Result<(Env, Option<tempfile::NamedTempFile>), DatabaseError> {
    let url = &conn.url;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    if let Some(h) = url.host_str() {
        set("PGHOST", h.trim_start_matches('[').trim_end_matches(']').to_owned());
    }
    if let Some(p) = url.port() {
        set("PGPORT", p.to_string());
    }
    if !url.username().is_empty() {
        set("PGUSER", decoded(url.username()));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        set("PGDATABASE", decoded(db));
    }
    for (k, v) in url.query_pairs() {
        let var = match k.as_ref() {
            "host" => "PGHOST",
            "port" => "PGPORT",
            "user" => "PGUSER",
            "dbname" => "PGDATABASE",
            "sslmode" => "PGSSLMODE",
            "sslrootcert" => "PGSSLROOTCERT",
            "sslcert" => "PGSSLCERT",
            "sslkey" => "PGSSLKEY",
            "connect_timeout" => "PGCONNECT_TIMEOUT",
            "target_session_attrs" => "PGTARGETSESSIONATTRS",
            "application_name" => continue,
            other => return Err(refused(format!("its URL has the parameter {other:?}, which canup does not pass to psql"))),
        };
        set(var, v.into_owned());
    }
    set("PGAPPNAME", "canup".into());
    if !env.iter().any(|(k, _)| k == "PGCONNECT_TIMEOUT") {
        env.push(("PGCONNECT_TIMEOUT".into(), "15".into()));
    }
    let secret = match url.password().map(decoded) {
        Some(p) => {
            let f = secret_file(&conn.endpoint, &pgpass(&p))?;
            env.push(("PGPASSFILE".into(), f.path().display().to_string()));
            Some(f)
        }
        None => None,
    };
    Ok((env, secret))
}

/// A whole database copied to or from a file of the backup set.
#[derive(Debug, Clone, Copy)]
pub enum Transfer<'a> {
    /// `pg_dump --format=custom`, `mongodump --archive --gzip` into the file.
    Dump(&'a Path),
    /// The file put back in one transaction (`pg_restore --clean --single-transaction`), or
    /// collection by collection (`mongorestore --drop`).
    Restore(&'a Path),
}

/// How canup dumps or restores `conn`'s database: the tool, its arguments (the file, never a
/// credential) and environment. Run as root: canup writes every argument itself, and the set
/// lives in root's backup directory. Redis is not dumped (Canopsis keeps only caches there).
pub fn transfer_invocation(conn: &Connection, transfer: Transfer<'_>) -> Result<Invocation, DatabaseError> {
    let refused = |why: String| DatabaseError::Refused { endpoint: conn.endpoint.clone(), why };
    let mut secrets = Vec::new();
    let (program, args, env) = match conn.engine {
        Engine::Postgres => {
            let (env, secret) = postgres_env(conn, &refused)?;
            secrets.extend(secret);
            let (program, args) = match transfer {
                Transfer::Dump(file) => ("/usr/bin/pg_dump", vec!["--no-password".to_owned(), "--format=custom".into(), format!("--file={}", file.display())]),
                Transfer::Restore(file) => {
                    let db = env
                        .iter()
                        .find(|(k, _)| k == "PGDATABASE")
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| refused("its URL names no database to restore into".into()))?;
                    let args = ["--no-password", "--clean", "--if-exists", "--single-transaction", "--exit-on-error"].map(str::to_owned).to_vec();
                    ("/usr/bin/pg_restore", [args, vec![format!("--dbname={db}"), file.display().to_string()]].concat())
                }
            };
            (program, args, env)
        }
        Engine::Mongo => {
            // The URL (password included) from a configuration file only root reads.
            let uri = serde_json::to_string(conn.url.as_str()).unwrap_or_default();
            let f = secret_file(&conn.endpoint, &format!("uri: {uri}\n"))?;
            let config = format!("--config={}", f.path().display());
            secrets.push(f);
            match transfer {
                Transfer::Dump(file) => {
                    ("/usr/bin/mongodump", vec!["--quiet".to_owned(), "--gzip".into(), format!("--archive={}", file.display()), config], Vec::new())
                }
                Transfer::Restore(file) => (
                    "/usr/bin/mongorestore",
                    vec!["--quiet".to_owned(), "--gzip".into(), "--drop".into(), format!("--archive={}", file.display()), config],
                    Vec::new(),
                ),
            }
        }
        Engine::Redis => return Err(refused("canup does not dump Redis (Canopsis keeps caches there, rebuilt by the engines)".into())),
    };
    let request = ExecRequest { program: program.to_owned(), args, host_env: env, ..Default::default() };
    Ok(Invocation { request, secrets, skip_lines: 0 })
}

/// How the host runs `script` on `conn`: the client, its arguments (no credential among
/// them), its environment and its input.
pub fn invocation(conn: &Connection, script: &str, write: bool, sysroot: &Sysroot) -> Result<Invocation, DatabaseError> {
    let refused = |why: String| DatabaseError::Refused { endpoint: conn.endpoint.clone(), why };
    let url = &conn.url;
    let password = url.password().map(decoded);
    let mut secrets = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let (args, stdin, skip_lines) = match conn.engine {
        Engine::Postgres => {
            let (pg_env, secret) = postgres_env(conn, &refused)?;
            env = pg_env;
            secrets.extend(secret);
            if !write {
                // A read-only request runs in read-only transactions: the server refuses a
                // change the step did not declare (a script can undo it, so it is a guard
                // against mistakes, not a boundary: that is the policy's `write`).
                env.push(("PGOPTIONS".into(), "-c default_transaction_read_only=on".into()));
            }
            // The script as one `--command`: psql sends it to the server as it is, in one
            // transaction, so a failed migration leaves nothing half-done. Read from a file or
            // standard input, psql would obey its backslash commands first (`\\! cmd` runs a
            // shell as root, `\\i` reads any file): a script that is one is refused.
            if script.trim_start().starts_with('\\') {
                return Err(refused("the script is a psql backslash command (\\! \\i \\o …), which canup never runs: give SQL only".into()));
            }
            let args = ["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set", "ON_ERROR_STOP=1", "--single-transaction", "--command", script];
            (args.map(str::to_owned).to_vec(), None, 0)
        }
        Engine::Mongo => {
            // The shell connects from a script file that holds the URL, then runs the step's
            // script: `mongo URL < script.js` without the URL on the command line.
            let url_json = serde_json::to_string(url.as_str()).unwrap_or_default();
            let f = secret_file(&conn.endpoint, &format!("db = connect({url_json});\n{script}\n"))?;
            let args = vec!["--nodb".to_owned(), "--quiet".to_owned(), f.path().display().to_string()];
            secrets.push(f);
            (args, None, 0)
        }
        Engine::Redis => {
            if !write
                && let Some(cmd) = script.lines().filter_map(|l| l.split_whitespace().next()).find(|w| !REDIS_READS.iter().any(|r| r.eq_ignore_ascii_case(w)))
            {
                return Err(refused(format!("{cmd} is not a read-only Redis command; a read-only request may use {}", REDIS_READS.join(", "))));
            }
            let mut args = vec!["--no-auth-warning".to_owned()];
            if url.scheme() == "rediss" {
                args.push("--tls".into());
            }
            args.extend(["-h".into(), url.host_str().unwrap_or("127.0.0.1").to_owned(), "-p".into(), url.port().unwrap_or(6379).to_string()]);
            let db = url.path().trim_start_matches('/');
            if !db.is_empty() {
                args.extend(["-n".into(), db.to_owned()]);
            }
            // The password on the input, as the first command, never in an argument.
            let (input, skip) = match &password {
                Some(p) if url.username().is_empty() => (format!("AUTH {}\n{script}\n", redis_quoted(p)), 1),
                Some(p) => (format!("AUTH {} {}\n{script}\n", redis_quoted(&decoded(url.username())), redis_quoted(p)), 1),
                None => (format!("{script}\n"), 0),
            };
            (args, Some(input.into_bytes()), skip)
        }
    };
    // The client runs as the canopsis user, never as root: a database client is a programming
    // environment of its own (the mongo shell's `runProgram`, mongosh's `require`), so a
    // script run by root would be a root shell for any step granted `write`. The canopsis user
    // exists wherever the database endpoints are used (package installations) and may already
    // read go-engines-vars.conf; its files (the connection, the script) become its own.
    if sysroot.is_host() && nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name(CLIENT_USER).ok().flatten().ok_or_else(|| {
            refused(format!("the database clients run as the {CLIENT_USER} user, which this host lacks (is Canopsis installed by packages?)"))
        })?;
        for f in &secrets {
            nix::unistd::chown(f.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| DatabaseError::TempFile { endpoint: conn.endpoint.clone(), source: std::io::Error::from(e) })?;
        }
    }
    // Every variable is the host's: none is the step's, and none enters the journal or the audit.
    let request =
        ExecRequest { program: client(conn.engine, sysroot).to_owned(), args, host_env: env, stdin, user: Some(CLIENT_USER.to_owned()), ..Default::default() };
    Ok(Invocation { request, secrets, skip_lines })
}

/// The client's output as the step gets it: without the lines the host's own commands caused
/// (Redis's `OK` to `AUTH`), and for Redis with a status that means something. redis-cli
/// reading its commands from its input exits 0 whatever happens (the server not reached, an
/// error reply), so the status is canup's reading of its output instead: 1 when the server
/// was not reached, answered nothing, or replied with an error (a line starting with one of
/// Redis's error codes), with the reason on stderr.
pub fn read_output(engine: Engine, skip_lines: usize, o: &mut super::exec::ExecOutput) {
    const ERRORS: &[&str] =
        &["ERR ", "WRONGTYPE ", "NOAUTH ", "WRONGPASS ", "NOPERM ", "READONLY ", "MISCONF ", "LOADING ", "BUSY", "OOM ", "EXECABORT ", "NOSCRIPT "];
    for _ in 0..skip_lines {
        let cut = o.stdout.iter().position(|&b| b == b'\n').map_or(o.stdout.len(), |i| i + 1);
        o.stdout.drain(..cut);
    }
    if engine != Engine::Redis || o.status != Some(0) {
        return;
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    let why = if String::from_utf8_lossy(&o.stderr).contains("Could not connect") {
        Some("the Redis server was not reached".to_owned())
    } else if stdout.trim().is_empty() {
        Some("the Redis server answered nothing".to_owned())
    } else {
        stdout.lines().find(|l| ERRORS.iter().any(|e| l.starts_with(e))).map(|l| format!("the Redis server replied with an error: {l}"))
    };
    if let Some(why) = why {
        o.status = Some(1);
        o.stderr.extend_from_slice(format!("canup: {why} (redis-cli itself exits 0 when it reads its commands from its input)\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> Connection {
        let u = Url::parse(url).unwrap();
        let engine = match u.scheme() {
            "postgresql" => Engine::Postgres,
            "mongodb" => Engine::Mongo,
            _ => Engine::Redis,
        };
        Connection { endpoint: "e".into(), engine, url: u }
    }

    /// A simulated host's root: on the real one, the clients need the canopsis user, which
    /// this machine lacks (that refusal has its test below).
    fn root() -> Sysroot {
        let dir = tempfile::tempdir().unwrap().keep();
        Sysroot::new(&dir).unwrap()
    }

    #[test]
    fn the_clients_run_as_the_canopsis_user_never_root() {
        let inv = invocation(&conn("redis://r:6379/0"), "PING", false, &root()).unwrap();
        assert_eq!(inv.request.user.as_deref(), Some(CLIENT_USER));
        if nix::unistd::geteuid().is_root() && nix::unistd::User::from_name(CLIENT_USER).ok().flatten().is_none() {
            let e = invocation(&conn("redis://r:6379/0"), "PING", false, &Sysroot::host()).unwrap_err().to_string();
            assert!(e.contains("run as the canopsis user, which this host lacks"), "{e}");
        }
    }

    #[test]
    fn no_credential_is_an_argument_and_the_password_file_holds_it() {
        let root = root();
        for url in ["postgresql://cps%40x:p%3Ass@db.example:5433/canopsis?sslmode=require", "mongodb://u:p%3Ass@m:27017/canopsis", "redis://:p%3Ass@r:6380/0"] {
            let inv = invocation(&conn(url), "SELECT 1", true, &root).unwrap();
            let argv = inv.request.args.join(" ");
            assert!(!argv.contains("p:ss") && !argv.contains("p%3Ass") && !argv.contains("://"), "{url}: {argv}");
            let env = format!("{:?}", inv.request.host_env);
            assert!(!env.contains("p:ss") && !env.contains("p%3Ass"), "{url}: {env}");
            let in_files: String = inv.secrets.iter().map(|f| std::fs::read_to_string(f.path()).unwrap()).collect();
            let input = String::from_utf8(inv.request.stdin.clone().unwrap_or_default()).unwrap();
            assert!(in_files.contains("p\\:ss") || in_files.contains("p%3Ass") || input.contains("\"p:ss\""), "{url}: {in_files} {input}");
            for f in &inv.secrets {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o077, 0, "only its owner reads it");
            }
        }
        let pg = invocation(&conn("postgresql://cps%40x:pw@db.example:5433/canopsis?sslmode=require"), "SELECT 1", false, &root).unwrap();
        let env: BTreeMap<_, _> = pg.request.host_env.into_iter().collect();
        assert_eq!(
            (env["PGUSER"].as_str(), env["PGHOST"].as_str(), env["PGPORT"].as_str(), env["PGDATABASE"].as_str()),
            ("cps@x", "db.example", "5433", "canopsis")
        );
        assert_eq!(env["PGSSLMODE"], "require");
        assert!(env["PGOPTIONS"].contains("default_transaction_read_only=on"));
    }

    #[test]
    fn redis_output_gets_a_status_that_means_something() {
        let out =
            |stdout: &str, stderr: &str| super::super::exec::ExecOutput { status: Some(0), stdout: stdout.into(), stderr: stderr.into(), ..Default::default() };
        let mut unreachable = out("", "Could not connect to Redis at 127.0.0.1:9: Connection refused\n");
        read_output(Engine::Redis, 0, &mut unreachable);
        assert_eq!(unreachable.status, Some(1));
        assert!(String::from_utf8_lossy(&unreachable.stderr).contains("the Redis server was not reached"));
        let mut refused = out("OK\nOK\nERR unknown command 'FOO'\n", "");
        read_output(Engine::Redis, 1, &mut refused);
        assert_eq!((refused.status, refused.stdout.as_slice()), (Some(1), &b"OK\nERR unknown command 'FOO'\n"[..]));
        let mut fine = out("OK\nOK\n", "");
        read_output(Engine::Redis, 1, &mut fine);
        assert_eq!((fine.status, fine.stdout.as_slice()), (Some(0), &b"OK\n"[..]));
        let mut silent = out("", "");
        read_output(Engine::Redis, 0, &mut silent);
        assert_eq!(silent.status, Some(1), "an empty answer is no answer");
    }

    #[test]
    fn a_read_only_redis_request_holds_only_reads() {
        let c = conn("redis://r:6379/0");
        assert!(invocation(&c, "INFO server", false, &root()).is_ok());
        let e = invocation(&c, "SELECT 11\nFLUSHDB", false, &root()).unwrap_err().to_string();
        assert!(e.contains("FLUSHDB is not a read-only Redis command"), "{e}");
        assert!(invocation(&c, "SELECT 11\nFLUSHDB", true, &root()).is_ok());
    }

    #[test]
    fn the_url_comes_from_go_engines_vars_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("opt/canopsis/etc")).unwrap();
        std::fs::write(
            dir.path().join("opt/canopsis/etc/go-engines-vars.conf"),
            "CPS_POSTGRES_URL=\"postgresql://cpspostgres:canopsis@localhost:5432/canopsis\"\n",
        )
        .unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let c = resolve("postgres", &Databases::new(), &root).unwrap();
        assert_eq!(c.shown(), "postgresql://cpspostgres:***@localhost:5432/canopsis");
        let e = resolve("redis", &Databases::new(), &root).unwrap_err().to_string();
        assert!(e.contains("sets no CPS_REDIS_URL"), "{e}");
        assert!(matches!(resolve("elastic", &Databases::new(), &root), Err(DatabaseError::Unknown(_))));
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut dbs = Databases::new();
        dbs.insert("postgres".into(), DatabaseEndpoint { url: Some("postgresql://u@h/db".into()), password_file: Some(pw), password_env: None });
        let c = resolve("postgres", &dbs, &root).unwrap();
        assert_eq!(c.url.password(), Some("s3cret"));
    }
}
