//! The `exec` capability: the check of a command against the rules, and the runner that
//! executes an allowed command with no inherited environment, bounded output, a time limit
//! and its whole process group killed when the limit passes.

mod args;
mod receipt;

use args::ArgPatterns;
pub(crate) use args::covers as args_cover;
pub use receipt::{Earlier, Receipt};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Denial, ExecRule, Grant, PatternError};
use crate::sysroot::Sysroot;

/// Variables that make the dynamic loader, a shell or an interpreter run code of the caller's
/// choosing: glibc's "unsecure" list and its tunables, the shells' startup hooks and exported
/// functions (`BASH_FUNC_name%%`, which bash imports as code), every Python variable (yum and
/// dnf are Python: `PYTHONWARNINGS` imports a module by name, and with `BROWSER` that gave a
/// root shell), and the code-loading variables of the other interpreters a Canopsis host runs
/// (Perl, Node.js, Ruby, Java). No command gets them, not even from an `env_file`.
pub const CODE_LOADING_ENV: &[&str] = &[
    "LD_*",
    "GLIBC_TUNABLES",
    "BASH_FUNC_*",
    "PYTHON*",
    "PERL*",
    "NODE_*",
    "RUBY*",
    "GEM_*",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
];

/// Besides [`CODE_LOADING_ENV`], what a step never passes: the editors, pagers and browsers
/// tools start (`SYSTEMD_EDITOR`, `PAGER`), OpenSSL's configuration and key log, the search
/// path and the home directory (`~/.rpmmacros` is rpm's: a macro there runs a shell), and the
/// proxies (a network target is an endpoint's, never a step's). An operator's `env_file`
/// (go-engines-vars.conf, which no step reads or writes) may set these.
///
/// Variables are granted by exact name, per program, in both the declaration and the policy
/// ([`validate_rule`]); both lists stay as defence in depth: no rule can grant these.
pub const FORBIDDEN_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_*",
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "LESS*",
    "SYSTEMD_*",
    "OPENSSL_*",
    "SSLKEYLOGFILE",
    "SSL_CERT_*",
    "CURL_*",
    "GIT_*",
    "GNUPGHOME",
    "RPM_*",
    "DNF_*",
    "YUM_*",
    "*_proxy",
    "*_PROXY",
];

/// Programs that reach a network service named on their own command line (a database
/// client, a downloader): no exec rule may name one. What a step sends to a database goes
/// through a database endpoint (`[[policy.database]]`), whose URL and credentials the
/// operator's configuration gives; with an exec rule, a pattern such as `redis://*/11` let a
/// step pick any host and database (`redis://h/0/11` flushed database 0 of another host).
pub const NETWORK_PROGRAMS: &[&str] = &[
    "mongo",
    "mongosh",
    "mongodump",
    "mongorestore",
    "mongoexport",
    "mongoimport",
    "redis-cli",
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "curl",
    "wget",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "telnet",
    "ftp",
    "openssl",
    "rabbitmqadmin",
    "influx",
];

/// Package managers, which take an argument naming a file (`x.rpm`, `./x`, a URL) as a local
/// package to install: `yum update canopsis-core-X.rpm` with its working directory in `/tmp`
/// installed whatever file a local user planted there.
const PACKAGE_MANAGERS: &[&str] = &["yum", "dnf", "dnf-3", "dnf5", "microdnf", "rpm", "yum-deprecated"];

fn program_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// What no exec rule may say, on either side (a step's declaration or any policy source):
/// checked when the rules are compiled, so a policy that says it does not load.
fn validate_rule(rule: &ExecRule, origin: &str) -> Result<(), PatternError> {
    let refused = |pattern: &str, why: String| PatternError { pattern: pattern.to_owned(), origin: origin.to_owned(), why };
    if NETWORK_PROGRAMS.contains(&program_name(&rule.program)) {
        return Err(refused(
            &rule.program,
            "a program that reaches the network takes its target from an endpoint, never from a step's arguments: give the step a database endpoint ([[policy.database]]) instead of an exec rule".into(),
        ));
    }
    for name in &rule.env {
        if !portable_name(name) {
            return Err(refused(name, "environment variables are granted by exact name (letters, digits and '_'), never by pattern".into()));
        }
        if let Some(pattern) = forbidden_env(name) {
            return Err(refused(name, format!("{pattern} is refused to every program: it lets a program run code or read settings of the caller's choosing")));
        }
    }
    Ok(())
}

/// A name a shell exports as it is: letters, digits and '_', not starting with a digit.
fn portable_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The search path every command gets unless its step passes one: systemd's default for
/// services. A program that runs others by name (`canopsis-reconfigure` runs `bash -c
/// "mongosh …"` for each MongoDB migration) finds nothing with no PATH at all.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

/// Set for a program run "as user U" under `--sysroot`: the sysroot's users do not exist on
/// the machine, so the simulated tools learn the user from this variable instead.
pub const SIMULATED_USER_ENV: &str = "CANUP_SIMULATED_USER";

/// One command as a step asked for it, before any mapping.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Variables the host adds after the check (the rule's `env_file`): never the step's to
    /// see, and left out of the journal's and the audit's record of the command.
    pub host_env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledExecRule {
    program: String,
    args: ArgPatterns,
    /// Exact names ([`validate_rule`]).
    env: Vec<String>,
    users: Vec<String>,
    readonly: bool,
    timeout: Option<Duration>,
    env_file: Option<String>,
}

impl CompiledExecRule {
    pub(crate) fn new(rule: &ExecRule, origin: &str) -> Result<Self, PatternError> {
        validate_rule(rule, origin)?;
        Ok(Self {
            program: rule.program.clone(),
            args: ArgPatterns::compile(&rule.args, rule.shell, origin)?,
            env: rule.env.clone(),
            users: rule.users.clone(),
            readonly: rule.readonly,
            timeout: rule.timeout_seconds.map(Duration::from_secs),
            env_file: rule.env_file.clone(),
        })
    }

    fn covers(&self, req: &ExecRequest) -> bool {
        self.program == req.program && self.args_match(&req.args) && self.env_match(&req.env) && self.user_match(req.user.as_deref())
    }

    fn args_match(&self, args: &[String]) -> bool {
        self.args.matches(args)
    }

    fn env_match(&self, env: &[(String, String)]) -> bool {
        env.iter().all(|(k, _)| self.env.contains(k))
    }

    fn user_match(&self, user: Option<&str>) -> bool {
        user.is_none_or(|u| self.users.iter().any(|allowed| allowed == u))
    }
}

/// Names the first part of the request that no rule of this side covers, or `None` when one
/// rule covers all of it (program, arguments, environment and user together).
fn uncovered(rules: &[CompiledExecRule], req: &ExecRequest) -> Option<String> {
    let for_program: Vec<_> = rules.iter().filter(|r| r.program == req.program).collect();
    if for_program.is_empty() {
        return Some(format!("exec of program {}", req.program));
    }
    let with_args: Vec<_> = for_program.into_iter().filter(|r| r.args_match(&req.args)).collect();
    if with_args.is_empty() {
        return Some(format!("exec of {} with arguments {:?}", req.program, req.args));
    }
    let with_env: Vec<_> = with_args.into_iter().filter(|r| r.env_match(&req.env)).collect();
    if with_env.is_empty() {
        let names: Vec<_> = req.env.iter().map(|(k, _)| k.as_str()).collect();
        return Some(format!("exec of {} with environment variables {:?}", req.program, names));
    }
    if !with_env.iter().any(|r| r.covers(req)) {
        return Some(format!("exec of {} as user {}", req.program, req.user.as_deref().unwrap_or("?")));
    }
    None
}

/// By the text, not `Path::components`, which drops a `.` in the middle of a path.
fn has_dot_components(path: &str) -> bool {
    path.split('/').any(|c| c == "." || c == "..")
}

/// How long one command may run, and what set that limit (for the message when it is killed:
/// the operator must learn which setting raises it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeLimit {
    pub after: Duration,
    pub set_by: String,
}

impl Grant {
    /// The time limit of this (already checked) command: the step's declared limit for it, or
    /// `[limits] exec_timeout_seconds` where it declares none; a shorter limit the step asks
    /// for this one call; at most the policy's cap (the admitting rule's `timeout_seconds`,
    /// else `[limits] exec_max_timeout_seconds`).
    pub fn exec_time_limit(&self, req: &ExecRequest, limits: &ExecLimits) -> TimeLimit {
        let declared = self.declared.exec.iter().filter(|r| r.covers(req)).find_map(|r| r.timeout);
        let (mut after, mut set_by) = match declared {
            Some(d) => (d, format!("the limit step {} declares for this command (timeout_seconds in its step.toml)", self.step)),
            None => (limits.default_timeout, "[limits] exec_timeout_seconds in canup.toml (the step declares no limit for this command)".to_owned()),
        };
        if let Some(asked) = req.timeout
            && (asked < after || declared.is_none())
        {
            (after, set_by) = (asked, format!("the timeout step {} gives this call", self.step));
        }
        let policy = self.policy.exec.iter().filter(|r| r.covers(req)).filter_map(|r| r.timeout).min();
        let (cap, cap_by) = match policy {
            Some(c) => (c, format!("the policy's cap for this command (timeout_seconds of its [[policy.exec]] rule for {} in canup.toml)", req.program)),
            None => (limits.max_timeout, "[limits] exec_max_timeout_seconds in canup.toml (the policy's cap)".to_owned()),
        };
        if cap < after { TimeLimit { after: cap, set_by: cap_by } } else { TimeLimit { after, set_by } }
    }

    /// The longest limit the step declares for a command, capped by `[limits]
    /// exec_max_timeout_seconds`: the step's wall time must leave room for it.
    pub fn longest_declared_exec(&self, limits: &ExecLimits) -> Option<Duration> {
        let policy_cap = self.policy.exec.iter().filter_map(|r| r.timeout).max().unwrap_or(limits.max_timeout).max(limits.max_timeout);
        self.declared.exec.iter().filter_map(|r| r.timeout).max().map(|d| d.min(policy_cap))
    }

    /// Whether this (already checked) command is a read-only query: the operator's word,
    /// never the step's alone. Every policy rule that admits it must say `readonly`; a query
    /// runs for real in a dry run and is not journaled, so a step that could make a changing
    /// command a query could change the host in a dry run and repeat it on resume.
    pub fn exec_is_readonly(&self, req: &ExecRequest) -> bool {
        let mut admitting = self.policy.exec.iter().filter(|r| r.covers(req)).peekable();
        admitting.peek().is_some() && admitting.all(|r| r.readonly)
    }

    /// The single checkpoint for `exec`.
    pub fn check_exec(&self, req: &ExecRequest) -> Result<(), Denial> {
        if !req.program.starts_with('/') {
            return Err(Denial::Invalid {
                what: format!("exec of program {:?}", req.program),
                why: "programs are named by absolute path, never looked up through PATH".into(),
            });
        }
        if has_dot_components(&req.program) || req.program.contains('\0') {
            return Err(Denial::Invalid { what: format!("exec of program {:?}", req.program), why: "the path must not contain '.' or '..' components".into() });
        }
        if let Some(cwd) = &req.cwd
            && (!cwd.starts_with('/') || cwd.contains('\0') || has_dot_components(cwd))
        {
            return Err(Denial::Invalid {
                what: format!("working directory {cwd:?}"),
                why: "it must be an absolute path without '.' or '..' components".into(),
            });
        }
        for (name, value) in &req.env {
            // A portable name only: the receipt shell exports each variable by name, and odd
            // names (`BASH_FUNC_x%%`) are how shells smuggle code.
            if forbidden_env(name).is_none() && (!portable_name(name) || value.contains('\0')) {
                return Err(Denial::Invalid {
                    what: format!("environment variable {name:?}"),
                    why: "a name is letters, digits and '_', not starting with a digit, and a value has no NUL byte".into(),
                });
            }
            if let Some(pattern) = forbidden_env(name) {
                return Err(Denial::Forbidden {
                    what: format!("environment variable {name} for {}", req.program),
                    why: format!("{pattern} lets a program load code of the caller's choosing"),
                });
            }
        }
        if PACKAGE_MANAGERS.contains(&program_name(&req.program))
            && let Some(file) = req.args.iter().find(|a| !a.starts_with('-') && (a.contains('/') || a.to_ascii_lowercase().ends_with(".rpm")))
        {
            return Err(Denial::Forbidden {
                what: format!("{} with the argument {file:?}", req.program),
                why: "a package manager takes it for a local package file or a URL; canup installs packages from the configured repositories only, by name"
                    .into(),
            });
        }
        if let Some(what) = uncovered(&self.declared.exec, req) {
            return Err(Denial::NotDeclared { step: self.step.clone(), what });
        }
        if let Some(what) = uncovered(&self.policy.exec, req) {
            return Err(Denial::NotInPolicy { step: self.step.clone(), what });
        }
        if let Some(file) = self.exec_env_file(req)
            && !self.policy.exec.iter().any(|r| r.covers(req) && r.env_file.as_deref() == Some(file))
        {
            return Err(Denial::NotInPolicy { step: self.step.clone(), what: format!("exec of {} with the environment of {file}", req.program) });
        }
        Ok(())
    }

    /// The environment file the step's declaration gives this command (see
    /// `ExecRule::env_file`); the check makes sure the policy names the same one.
    pub fn exec_env_file(&self, req: &ExecRequest) -> Option<&str> {
        self.declared.exec.iter().filter(|r| r.covers(req)).find_map(|r| r.env_file.as_deref())
    }
}

/// Whether a variable name is one no step may pass (see [`CODE_LOADING_ENV`] and
/// [`FORBIDDEN_ENV`]): the pattern it matches.
pub fn forbidden_env(name: &str) -> Option<&'static str> {
    code_loading_env(name).or_else(|| matching(FORBIDDEN_ENV, name))
}

/// Whether a variable name makes a program run code of the caller's choosing
/// ([`CODE_LOADING_ENV`]): refused even from an operator's `env_file`.
pub fn code_loading_env(name: &str) -> Option<&'static str> {
    matching(CODE_LOADING_ENV, name)
}

fn matching(list: &[&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|p| match (p.strip_suffix('*'), p.strip_prefix('*')) {
        (Some(prefix), _) => name.starts_with(prefix),
        (_, Some(suffix)) => name.ends_with(suffix),
        _ => name == *p,
    })
}

/// Bounds of one command run by the host.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: usize,
    /// How often the operator hears that a command is still running.
    pub progress_every: Duration,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self { default_timeout: Duration::from_secs(600), max_timeout: Duration::from_secs(3600), max_output: 1 << 20, progress_every: Duration::from_secs(30) }
    }
}

/// What the operator hears while a command runs: the time it has run and its last output line.
pub type Still<'a> = &'a (dyn Fn(Duration, Option<String>) + Send + Sync);

/// How a running command is watched: its time limit, and who hears that it still runs.
pub struct Watch<'a> {
    pub limit: TimeLimit,
    pub every: Duration,
    pub still: Option<Still<'a>>,
}

#[cfg(test)]
impl Watch<'_> {
    /// No one listening, and the limit a call without a grant gets: the call's own timeout or
    /// the default, at most the maximum.
    pub fn quiet(req: &ExecRequest, limits: &ExecLimits) -> Self {
        let after = req.timeout.unwrap_or(limits.default_timeout).min(limits.max_timeout);
        Self { limit: TimeLimit { after, set_by: "[limits] exec_timeout_seconds in canup.toml".into() }, every: limits.progress_every, still: None }
    }
}

/// Waits for `work` within the watch's limit, telling `still` every `every` how long it has
/// run and `last_line()`: a migration of hours is not minutes of silence.
async fn supervise<T>(
    work: impl std::future::Future<Output = T>,
    program: &str,
    watch: &Watch<'_>,
    last_line: impl Fn() -> Option<String>,
) -> Result<T, ExecError> {
    let start = tokio::time::Instant::now();
    let deadline = tokio::time::sleep(watch.limit.after);
    let mut ticker = tokio::time::interval_at(start + watch.every, watch.every.max(Duration::from_millis(100)));
    tokio::pin!(work, deadline);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            () = &mut deadline => {
                return Err(ExecError::Timeout { program: program.to_owned(), after: watch.limit.after, set_by: watch.limit.set_by.clone() })
            }
            _ = ticker.tick(), if watch.still.is_some() => {
                if let Some(still) = watch.still {
                    still(start.elapsed(), last_line());
                }
            }
        }
    }
}

/// The last non-empty line of `bytes`, shortened for a progress line.
fn last_line_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(crate::ui::visible(&line.chars().take(160).collect::<String>()).into_owned())
}

#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("program {program} not found at {real}")]
    NotFound { program: String, real: PathBuf },
    #[error("program {program} resolves outside the sysroot ({real})")]
    OutsideSysroot { program: String, real: PathBuf },
    #[error("working directory {0} does not exist, is not a directory, or leads outside the sysroot")]
    NoCwd(String),
    #[error("user {0} does not exist on this machine")]
    NoUser(String),
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} ran past its time limit of {}, set by {set_by}; its process group was killed", humantime::format_duration(*after))]
    Timeout { program: String, after: Duration, set_by: String },
    #[error("{program}: {source}")]
    Io { program: String, source: std::io::Error },
}

/// Kills the command's whole process group when dropped, so that neither a timeout nor a
/// cancelled step (wall-time limit) leaves grandchildren running.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (already gone) is the normal case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Reads a stream to its end, keeping at most `max` bytes. The rest is drained (so the
/// program never blocks on a full pipe) and reported as truncation.
async fn read_bounded(mut stream: impl AsyncRead + Unpin, max: usize, tail: &std::sync::Mutex<Vec<u8>>) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        // The end of what the command said last, stdout and stderr together, for progress.
        if let Ok(mut t) = tail.lock() {
            t.extend_from_slice(&buf[..n]);
            let excess = t.len().saturating_sub(TAIL);
            t.drain(..excess);
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// Bytes kept of a running command's latest output, for its progress line.
pub(super) const TAIL: usize = 1024;

/// What a command with a receipt runs under: POSIX sh is on every host canup supports, and it
/// is the smallest parent that outlives canup and still learns the command's exit status.
const RECEIPT_SHELL: &str = "/bin/sh";

/// The shell's script once the receipt's status file (locked) is its descriptor 3: it writes
/// "started PID" then "exit N" there and holds the lock until it exits; the command does not
/// get the descriptor. A command killed by signal N reports 128 + N, as in any shell.
///
/// How descriptor 3 gets there: a `pre_exec` hook (`dup2`) makes the standard library `fork`
/// canup (tens of MB of mappings) instead of `posix_spawn`ing it, measured at +4 ms per command
/// on the demo upgrade. So a command run as root gets the status file as the shell's standard
/// input, moved to 3 by the shell, and its input file by path. A command run as another user
/// is forked anyway (for the user switch) and could not open a file in the state directory:
/// the hook puts the status file on 3 and the input on standard input.
///
/// The shell gets the command's environment as its own, never as arguments: any local user
/// can read a process's arguments, and the variables can hold passwords (`CPS_MONGO_URL`).
/// What could make the shell run code of the environment's choosing (`ENV`, `BASH_ENV`,
/// exported functions, `SHELLOPTS`, `PS4`, `IFS`) is in [`CODE_LOADING_ENV`], refused before
/// any command runs.
macro_rules! receipt_wrapper {
    () => {
        r#"echo "started $$" >&3; "$@" 3>&-; s=$?; echo "exit $s" >&3; exit $s"#
    };
}

/// Runs an already-checked command. With a receipt (a changing command under apply), its
/// outcome is left in files that outlive canup; see [`Receipt`].
pub async fn run(req: &ExecRequest, sysroot: &Sysroot, limits: &ExecLimits, receipt: Option<&Receipt>, watch: &Watch<'_>) -> Result<ExecOutput, ExecError> {
    let real = sysroot.map(Path::new(&req.program));
    let resolved = real.canonicalize().map_err(|_| ExecError::NotFound { program: req.program.clone(), real: real.clone() })?;
    if !sysroot.is_host() && sysroot.unmap(&resolved).is_none() {
        return Err(ExecError::OutsideSysroot { program: req.program.clone(), real: resolved });
    }
    let cwd = match &req.cwd {
        Some(c) => {
            let dir = sysroot.map(Path::new(c)).canonicalize().map_err(|_| ExecError::NoCwd(c.clone()))?;
            // A symbolic link under the sysroot must not take the command outside it.
            if !dir.is_dir() || (!sysroot.is_host() && sysroot.unmap(&dir).is_none()) {
                return Err(ExecError::NoCwd(c.clone()));
            }
            dir
        }
        None => sysroot.root().to_path_buf(),
    };
    let switched = match &req.user {
        Some(user) if sysroot.is_host() => Some(User::from_name(user).ok().flatten().ok_or_else(|| ExecError::NoUser(user.clone()))?),
        _ => None,
    };
    // Exactly the step's variables, then the host's (the rule's env_file) and a search path:
    // nothing of canup's own environment is inherited.
    let mut env: Vec<(String, String)> = req.env.iter().filter(|(k, _)| !req.host_env.iter().any(|(h, _)| h == k)).cloned().collect();
    env.extend(req.host_env.iter().cloned());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    if switched.is_none()
        && let Some(user) = &req.user
    {
        env.push((SIMULATED_USER_ENV.to_owned(), user.clone()));
    }
    let mut cmd = match receipt {
        None => {
            let mut cmd = tokio::process::Command::new(&real);
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        }
        Some(r) => {
            let mut sh = tokio::process::Command::new(RECEIPT_SHELL);
            match switched {
                None => sh.args(["-c", concat!(r#"exec 3<&0 <"$1" || exit 125; shift; "#, receipt_wrapper!()), "canup-exec"]).arg(r.input(req)),
                Some(_) => sh.args(["-c", receipt_wrapper!(), "canup-exec"]),
            };
            sh.env_clear().envs(env.iter().map(|(k, v)| (k, v))).arg(&real);
            sh
        }
    };
    cmd.args(&req.args).current_dir(&cwd).process_group(0).kill_on_drop(true);
    if let Some(u) = &switched {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    match receipt {
        None => run_piped(cmd, req, limits, watch).await,
        Some(r) => r.run(cmd, req, switched.is_some(), limits, watch).await,
    }
}

/// The plain way: output through pipes, nothing left behind.
async fn run_piped(mut cmd: tokio::process::Command, req: &ExecRequest, limits: &ExecLimits, watch: &Watch<'_>) -> Result<ExecOutput, ExecError> {
    cmd.stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn { program: req.program.clone(), source })?;
    let _group = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
    let io = |source| ExecError::Io { program: req.program.clone(), source };
    let stdin = child.stdin.take();
    let input = req.stdin.clone();
    let feed = async move {
        if let (Some(mut pipe), Some(data)) = (stdin, input) {
            // A program that exits without reading its input is not an error of the step.
            let _ = pipe.write_all(&data).await;
        }
    };
    let stdout = child.stdout.take().ok_or_else(|| io(std::io::Error::other("no stdout pipe")))?;
    let stderr = child.stderr.take().ok_or_else(|| io(std::io::Error::other("no stderr pipe")))?;
    let tail = std::sync::Mutex::new(Vec::new());
    let all = async {
        let ((), out, err, status) =
            tokio::join!(feed, read_bounded(stdout, limits.max_output, &tail), read_bounded(stderr, limits.max_output, &tail), child.wait());
        Ok::<_, std::io::Error>((out?, err?, status?))
    };
    let last_line = || tail.lock().ok().and_then(|t| last_line_of(&t));
    match supervise(all, &req.program, watch, last_line).await? {
        Ok(((stdout, stdout_truncated), (stderr, stderr_truncated), status)) => {
            Ok(ExecOutput { status: status.code(), stdout, stderr, stdout_truncated, stderr_truncated })
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(program: &str, args: &[&str]) -> ExecRequest {
        ExecRequest { program: program.into(), args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[tokio::test]
    async fn runs_as_another_user_on_the_host() {
        if !nix::unistd::geteuid().is_root() {
            // Switching users needs root; canup itself runs as root on a Canopsis host.
            eprintln!("skipped: not root");
            return;
        }
        let mut r = req("/usr/bin/id", &["-un"]);
        r.user = Some("nobody".into());
        let out = run(&r, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "nobody\n");
        r.user = Some("no-such-user-canup".into());
        assert!(matches!(run(&r, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await, Err(ExecError::NoUser(_))));
    }

    #[tokio::test]
    async fn nothing_is_inherited_and_stdin_is_fed() {
        // SAFETY: this test binary does not read the variable concurrently.
        unsafe { std::env::set_var("CANUP_EXEC_TEST_INHERITED", "1") };
        let mut r = req("/usr/bin/env", &[]);
        r.env = vec![("ONLY".into(), "this".into())];
        let out = run(&r, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ONLY=this\nPATH={DEFAULT_PATH}\n"), "the step's variable and the default search path only");
        let mut cat = req("/bin/cat", &[]);
        cat.stdin = Some(b"fed".to_vec());
        assert_eq!(run(&cat, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&cat, &ExecLimits::default())).await.unwrap().stdout, b"fed");
    }

    #[tokio::test]
    async fn a_receipt_keeps_a_finished_commands_outcome_for_a_resumed_canup() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = Receipt::new(&dir.path().join("receipts"), "r1");
        assert!(matches!(receipt.earlier(&ExecLimits::default(), |_| panic!("nothing runs")).await.unwrap(), Earlier::NeverRan));
        let mut r = req("/bin/sh", &["-c", "cat; echo err >&2; test -e /proc/self/fd/3 && echo leaked; exit 3"]);
        r.stdin = Some(b"fed\n".to_vec());
        let out = run(&r, &Sysroot::host(), &ExecLimits::default(), Some(&receipt), &Watch::quiet(&r, &ExecLimits::default())).await.unwrap();
        assert_eq!(
            (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
            (Some(3), &b"fed\n"[..], &b"err\n"[..]),
            "the command does not get the receipt's descriptor"
        );
        // What a canup that was killed before journaling this outcome finds when it resumes. (A
        // process another test thread forks at that moment may hold the status file's lock
        // for an instant, which `earlier` waits out: that wait is not the command running.)
        let Earlier::Finished(again) = receipt.earlier(&ExecLimits::default(), |_| {}).await.unwrap() else { panic!("no outcome") };
        assert_eq!((again.status, again.stdout, again.stderr), (Some(3), b"fed\n".to_vec(), b"err\n".to_vec()));
        receipt.remove();
        assert!(matches!(receipt.earlier(&ExecLimits::default(), |_| panic!("nothing runs")).await.unwrap(), Earlier::NeverRan));
    }

    /// The shipped policy (`host/dist/policy.toml`): every published step's commands pass, and
    /// the known ways to turn each allowed program into a shell or a write anywhere do not.
    #[test]
    fn the_shipped_policy_refuses_the_known_abuses_of_each_program() {
        let policy: Vec<CompiledExecRule> =
            crate::capabilities::tests::shipped_policy().exec.iter().map(|r| CompiledExecRule::new(r, "shipped").unwrap()).collect();
        let allowed = |program: &str, args: &[&str]| uncovered(&policy, &req(program, args)).is_none();
        let su = |line: &str| allowed("/usr/bin/su", &["-", "canopsis", "-c", line]);
        // What the published steps run.
        assert!(allowed("/usr/bin/rpm", &["-q", "canopsis-core"]) && allowed("/usr/bin/rpm", &["-q", "canopsis-cat"]));
        assert!(allowed("/usr/bin/rpm", &["-qa", "--qf", "%{NAME} %{VERSION}[ %{REQUIRENAME}]\\n", "canopsis*"]));
        assert!(allowed("/usr/bin/yum", &["update", "-y", "canopsis-cat-3.40.0", "canopsis-core-3.40.0"]));
        assert!(allowed(
            "/usr/bin/yum",
            &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-4.5.7", "canopsis-engines-go-4.5.7", "canopsis-webui-4.5.7"]
        ));
        assert!(allowed("/usr/bin/dnf", &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-pro-23.04.3", "canopsis-webui-23.04.3"]));
        assert!(su("canopsinit --canopsis-edition cat --canopsis-stack go") && su("canopsinit --canopsis-edition core"));
        assert!(allowed("/usr/bin/systemctl", &["enable", "canopsis-engine-go@engine-fifo"]) && allowed("/usr/bin/systemctl", &["daemon-reload"]));
        // rpm: macros and configuration files run code.
        for args in [
            &["-q", "--eval=%(id)"][..],
            &["-q", "--rcfile=/tmp/x", "canopsis-core"],
            &["-q", "--macros=/tmp/m"],
            &["-q", "-E", "%(id)"],
            &["-q", "canopsis-webui"],
            &["-qa"],
            &["-qa", "--qf", "%{NAME} %(id)", "canopsis*"],
            &["-q", "--requires", "canopsis-core"],
        ] {
            assert!(!allowed("/usr/bin/rpm", args), "rpm {args:?}");
        }
        // yum: options that load configuration, plugins or another root.
        for args in [
            &["--setopt=pluginpath=/tmp", "update", "-y", "canopsis-core-1"][..],
            &["update", "-y", "canopsis-core-1", "--setopt=x=y"],
            &["-c", "/tmp/yum.conf", "update", "-y", "canopsis-core-1"],
            &["update", "-y", "--installroot=/tmp/r", "canopsis-core-1"],
            &["update", "-y", "canopsis-core-1", "--enableplugin=*"],
            &["install", "-y", "canopsis-core-1"],
            &["update", "-y", "bash"],
            &["update", "-y", "canopsis-core-1/../../tmp/evil.rpm"],
            &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-/tmp/x.rpm"],
            &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-4.5.7", "bash"],
            &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-4.5.7", "--setopt=x=y"],
            &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y"],
        ] {
            assert!(!allowed("/usr/bin/yum", args), "yum {args:?}");
        }
        // su -c: the argument is a shell command line.
        for line in [
            "canopsinit --canopsis-edition cat; id",
            "canopsinit --canopsis-edition cat | sh",
            "canopsinit --canopsis-edition $(curl x|sh)",
            "canopsinit --canopsis-edition `id`",
            "canopsinit --canopsis-edition cat && id",
            "canopsinit --canopsis-edition cat >/etc/passwd",
            "canopsinit --canopsis-edition cat\nid",
            "id",
            "canopsinit --canopsis-edition cat --other",
        ] {
            assert!(!su(line), "su -c {line:?}");
        }
        assert!(!allowed("/usr/bin/su", &["-", "root", "-c", "canopsinit --canopsis-edition cat"]));
        assert!(!allowed("/usr/bin/su", &["-s", "/bin/sh", "canopsis", "-c", "canopsinit --canopsis-edition cat"]));
        // mongo: JavaScript that runs programs, an interactive shell.
        for args in [
            &["--eval", "runProgram('sh','-c','id')"][..],
            &["mongodb://x", "--eval", "runProgram('id')"],
            &["--shell", "mongodb://x"],
            &["mongodb://x", "--shell"],
            &["--nodb"],
        ] {
            assert!(!allowed("/usr/bin/mongo", args), "mongo {args:?}");
        }
        // systemctl: other units and verbs, another root.
        for args in [
            &["start", "evil.service"][..],
            &["enable", "evil.service"],
            &["enable", "--now", "canopsis-engine-go@x"],
            &["--root=/tmp", "enable", "canopsis-engine-go@x"],
            &["link", "/tmp/evil.service"],
            &["edit", "canopsis-engine-go@x"],
            &["set-environment", "LD_PRELOAD=/tmp/x.so"],
        ] {
            assert!(!allowed("/usr/bin/systemctl", args), "systemctl {args:?}");
        }
        // The others take no argument of the step's choosing.
        assert!(!allowed("/usr/bin/canoctl", &["restart", "--all"]) && !allowed("/usr/bin/docker-compose", &["-f", "/tmp/x.yml", "up", "-d"]));
        assert!(!allowed("/opt/canopsis/bin/init", &["-conf", "/tmp/x.toml"]) && !allowed("/opt/canopsis/bin/canopsis-reconfigure", &["-edition", "x"]));
    }

    /// A working directory is resolved like the program: a link under the sysroot that leads
    /// outside it is refused before anything runs.
    #[tokio::test]
    async fn a_working_directory_leading_outside_the_sysroot_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        // Refused before anything starts, so the program need not be runnable (an executable
        // written here could meet ETXTBSY from another test thread's fork).
        std::fs::write(root.path().join("usr/bin/pwd"), "").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let sysroot = Sysroot::new(root.path()).unwrap();
        let mut r = req("/usr/bin/pwd", &[]);
        r.cwd = Some("/escape".into());
        let e = run(&r, &sysroot, &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await.unwrap_err().to_string();
        assert!(e.contains("working directory /escape") && e.contains("outside the sysroot"), "{e}");
        let mut r = req("/bin/pwd", &[]);
        r.cwd = Some("/usr".into());
        assert_eq!(run(&r, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await.unwrap().stdout, b"/usr\n");
    }

    /// The receipt shell gets the command's environment as its own: none of its values is an
    /// argument (any local user reads arguments in /proc; CPS_MONGO_URL holds a password).
    #[tokio::test]
    async fn the_receipt_shell_gets_the_environment_never_as_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = Receipt::new(dir.path(), "env");
        let mut r = req("/bin/sh", &["-c", r#"echo "own=$FOO"; tr '\0' ' ' < /proc/$PPID/cmdline"#]);
        r.env = vec![("FOO".into(), "bar baz".into())];
        r.host_env = vec![("CPS_X".into(), "pass=word".into())];
        let out = run(&r, &Sysroot::host(), &ExecLimits::default(), Some(&receipt), &Watch::quiet(&r, &ExecLimits::default())).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("own=bar baz\n"), "the command lost its variable: {text}");
        assert!(text.contains("canup-exec"), "the shell's arguments were read: {text}");
        assert!(!text.contains("bar baz ") && !text.contains("pass=word"), "a value is among the shell's arguments: {text}");
        assert_eq!(out.status, Some(0));
    }

    #[tokio::test]
    async fn a_receipt_bounds_the_output_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = Receipt::new(dir.path(), "big");
        let limits = ExecLimits { max_output: 10, ..Default::default() };
        let r = req("/bin/sh", &["-c", "seq 1 1000"]);
        let out = run(&r, &Sysroot::host(), &limits, Some(&receipt), &Watch::quiet(&r, &limits)).await.unwrap();
        assert_eq!((out.stdout.len(), out.stdout_truncated, out.stderr_truncated), (10, true, false));
    }

    #[tokio::test]
    async fn a_command_whose_shell_was_killed_is_reported_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = Receipt::new(dir.path(), "killed");
        let mut r = req("/bin/sleep", &["30"]);
        r.timeout = Some(Duration::from_millis(300));
        let e = run(&r, &Sysroot::host(), &ExecLimits::default(), Some(&receipt), &Watch::quiet(&r, &ExecLimits::default())).await.unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        assert!(matches!(receipt.earlier(&ExecLimits::default(), |_| {}).await.unwrap(), Earlier::Interrupted));
    }

    #[tokio::test]
    async fn a_command_still_running_from_a_dead_canup_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = Receipt::new(dir.path(), "orphan");
        // The receipt as an interrupted canup leaves it: the shell (here a thread) holds the
        // status file's lock while its command runs, then records the exit status.
        let status = dir.path().join("orphan.status");
        let file = std::fs::File::create(&status).unwrap();
        file.lock().unwrap();
        std::fs::write(&status, "started 4242\n").unwrap();
        std::fs::write(dir.path().join("orphan.out"), "").unwrap();
        std::fs::write(dir.path().join("orphan.err"), "").unwrap();
        let shell = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(dir.path().join("orphan.out"), "migrated\n").unwrap();
            std::fs::write(&status, "started 4242\nexit 0\n").unwrap();
            drop(file);
            dir
        });
        let mut told = None;
        let earlier = receipt.earlier(&ExecLimits::default(), |pid| told = Some(pid)).await.unwrap();
        let _dir = shell.join().unwrap();
        assert_eq!(told, Some(Some(4242)), "the wait names the shell");
        let Earlier::Finished(out) = earlier else { panic!("{earlier:?}") };
        assert_eq!((out.status, out.stdout), (Some(0), b"migrated\n".to_vec()));
    }

    #[tokio::test]
    async fn a_receipt_command_runs_as_another_user_and_still_records_its_status() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Like /var/lib/canup: the user cannot reach anything in the state directory by path.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let receipt = Receipt::new(&dir.path().join("receipts"), "user");
        let mut r = req("/bin/sh", &["-c", "id -un; cat"]);
        r.user = Some("nobody".into());
        r.stdin = Some(b"input\n".to_vec());
        let out = run(&r, &Sysroot::host(), &ExecLimits::default(), Some(&receipt), &Watch::quiet(&r, &ExecLimits::default())).await.unwrap();
        assert_eq!((out.status, String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "nobody\ninput\n"), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(matches!(receipt.earlier(&ExecLimits::default(), |_| {}).await.unwrap(), Earlier::Finished(_)));
    }

    /// Under apply a command writes to its receipt's files: its progress reads its last line
    /// there, as the piped way reads it from the pipes.
    #[tokio::test]
    async fn a_running_command_reports_its_time_and_last_line_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let r = req("/bin/sh", &["-c", "echo migrating 1 of 2; sleep 1; echo migrating 2 of 2 >&2; sleep 1"]);
        for receipt in [Some(Receipt::new(dir.path(), "long")), None] {
            let heard = std::sync::Mutex::new(Vec::new());
            let still = |ran: Duration, line: Option<String>| heard.lock().unwrap().push((ran, line));
            let limit = TimeLimit { after: Duration::from_secs(10), set_by: "test".into() };
            let watch = Watch { limit, every: Duration::from_millis(400), still: Some(&still) };
            let out = run(&r, &Sysroot::host(), &ExecLimits::default(), receipt.as_ref(), &watch).await.unwrap();
            assert_eq!(out.status, Some(0));
            let heard = heard.lock().unwrap().clone();
            assert!(heard.len() >= 3, "{heard:?}");
            assert_eq!(heard[0].1.as_deref(), Some("migrating 1 of 2"), "{heard:?}");
            assert_eq!(heard.last().unwrap().1.as_deref(), Some("migrating 2 of 2"), "stderr counts too: {heard:?}");
            assert!(heard.windows(2).all(|w| w[0].0 < w[1].0), "{heard:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_not_found() {
        let r = req("/usr/bin/canup-no-such-program", &[]);
        let e = run(&r, &Sysroot::host(), &ExecLimits::default(), None, &Watch::quiet(&r, &ExecLimits::default())).await.unwrap_err();
        assert!(matches!(e, ExecError::NotFound { .. }), "{e}");
    }

    #[tokio::test]
    async fn timeout_is_capped_by_the_maximum() {
        let limits = ExecLimits { default_timeout: Duration::from_secs(60), max_timeout: Duration::from_millis(200), max_output: 1024, ..Default::default() };
        let mut r = req("/bin/sleep", &["30"]);
        r.timeout = Some(Duration::from_secs(3600));
        let e = run(&r, &Sysroot::host(), &limits, None, &Watch::quiet(&r, &limits)).await.unwrap_err();
        assert!(matches!(e, ExecError::Timeout { after, .. } if after == Duration::from_millis(200)), "{e}");
    }
}
