//! Capabilities: what a step may touch.
//!
//! A step carries a signed *declaration* of the capabilities it needs; the operator's *policy*
//! is an upper bound on what any step may get. A call is allowed only when both allow it (the
//! intersection), and everything not listed is denied. There is exactly one checkpoint per
//! host call: [`Grant::check_exec`], [`Grant::check_fs`], [`Grant::check_http`] and
//! [`Grant::check_database`].
//!
//! The rules are data (TOML in manifests and `canup.toml`); this module compiles them into
//! matchers once per step so a host call costs a few glob matches.

pub mod content;
pub mod database;
pub mod exec;
pub mod fs;
pub mod http;

use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The capability rules of one side (a step's declaration or the operator's policy).
/// Unknown keys are refused where a person writes them (see [`crate::formats`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct CapabilitySet {
    /// Programs the step may run, each with its argument patterns.
    #[serde(default)]
    pub exec: Vec<ExecRule>,
    /// Paths the step may read and write.
    #[serde(default)]
    pub fs: FsRules,
    /// Named endpoints the step may call.
    #[serde(default)]
    pub http: Vec<HttpRule>,
    /// Database endpoints the step may run scripts on (`postgres`, `mongo`, `redis`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database: Vec<database::DatabaseRule>,
    /// In the policy: what a change to a systemd unit or drop-in may add (see [`content`]).
    #[serde(default, skip_serializing_if = "content::UnitRules::is_empty")]
    pub units: content::UnitRules,
    /// In the policy: what a change to a Compose project may make Docker run.
    #[serde(default, skip_serializing_if = "content::compose::ComposeRules::is_empty")]
    pub compose: content::compose::ComposeRules,
}

/// One program and the argument lists it may be run with.
///
/// `args` is a list of per-argument glob patterns: `*` matches any one argument, `**` (last
/// only) matches all remaining arguments, and a literal `*` inside an argument is written `[*]`
/// (for example `--disablerepo=[*]`). An argument equal to the pattern's text always matches,
/// so a literal script needs no escaping.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ExecRule {
    /// Absolute path of the program, as the step names it (before `--sysroot` mapping).
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Names (globs) of the environment variables the step may pass.
    #[serde(default)]
    pub env: Vec<String>,
    /// Users the program may be run as; empty means canup's own user only.
    #[serde(default)]
    pub users: Vec<String>,
    /// The program only reads (`rpm -q`, `systemctl is-enabled`): a dry run executes it for
    /// real, while every other command is only recorded. Counts only in the operator's policy
    /// (see `Grant::exec_is_readonly`); in a step's declaration it is what the vendor claims,
    /// shown in the plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// The last argument is a command line a shell reads (`su - canopsis -c "…"`): it must
    /// hold no shell syntax and is matched word by word (see `exec/args.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shell: bool,
    /// How long a command this rule admits may run. In a step's declaration: the vendor's word
    /// for a command known to be long (a migration: hours), instead of `[limits]
    /// exec_timeout_seconds` (600 s). In the operator's policy: the most it may run, whatever
    /// the step declares (`[limits] exec_max_timeout_seconds` where the rule says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// A file of `NAME=value` lines the host exports to the command, as systemd's
    /// `EnvironmentFile=` and the procedures' `set -o allexport; source FILE` do
    /// (`/opt/canopsis/etc/go-engines-vars.conf` for `canopsis-reconfigure`): the step neither
    /// reads nor passes those variables, which hold the databases' passwords. Both the
    /// declaration and the policy must name the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
}

/// Path globs (`*` stays within one directory, `**` crosses directories), read, write and
/// create kept separate: a step that edits a file declares it in read and write, one that may
/// make it in create too.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct FsRules {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    /// Where a new file may be made; `write` alone changes existing files only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create: Vec<String>,
    /// In the policy: paths no step reads, writes or creates whatever the rules above allow
    /// (the operator's `[deny] paths`, see `crate::policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Where a rule names the operator's Docker Compose project: `{compose_dir}/.env`. The
/// guides name no directory for it, so the vendor's steps and the shipped policy cannot; the
/// operator's `compose_dir` in canup.toml says where it is (default
/// [`DEFAULT_COMPOSE_DIR`]), and each side's rules are read with it in place before they
/// are compared or compiled.
pub const COMPOSE_DIR: &str = "{compose_dir}";
pub const DEFAULT_COMPOSE_DIR: &str = "/opt/canopsis/docker";

impl CapabilitySet {
    /// The rules with [`COMPOSE_DIR`] replaced by `compose_dir`.
    pub fn at_compose_dir(&self, compose_dir: &str) -> CapabilitySet {
        let paths = |list: &[String]| list.iter().map(|p| p.replace(COMPOSE_DIR, compose_dir)).collect();
        CapabilitySet {
            fs: FsRules { read: paths(&self.fs.read), write: paths(&self.fs.write), create: paths(&self.fs.create), deny: paths(&self.fs.deny) },
            ..self.clone()
        }
    }

    /// Adds `other`'s rules to these (the policy's sources add up, see `crate::policy`).
    pub fn add(&mut self, other: &CapabilitySet) {
        extend(&mut self.exec, &other.exec);
        extend(&mut self.fs.read, &other.fs.read);
        extend(&mut self.fs.write, &other.fs.write);
        extend(&mut self.fs.create, &other.fs.create);
        extend(&mut self.fs.deny, &other.fs.deny);
        extend(&mut self.http, &other.http);
        extend(&mut self.database, &other.database);
        self.units.add(&other.units);
        self.compose.add(&other.compose);
    }

    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
            && self.fs.read.is_empty()
            && self.fs.write.is_empty()
            && self.fs.create.is_empty()
            && self.http.is_empty()
            && self.database.is_empty()
    }

    /// One line per rule, as the plan and `canup policy review` show a grant.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for e in &self.exec {
            let mut line = format!("exec of {}", e.program);
            if !e.args.is_empty() {
                line.push_str(&format!(" with arguments {:?}", e.args));
            }
            if !e.env.is_empty() {
                line.push_str(&format!(" with variables {}", e.env.join(", ")));
            }
            if !e.users.is_empty() {
                line.push_str(&format!(" as {}", e.users.join("/")));
            }
            if let Some(f) = &e.env_file {
                line.push_str(&format!(" with the environment of {f}"));
            }
            lines.push(line);
        }
        lines.extend(self.fs.read.iter().map(|p| format!("read of {p}")));
        lines.extend(self.fs.write.iter().map(|p| format!("write of {p}")));
        lines.extend(self.fs.create.iter().map(|p| format!("creation of {p}")));
        lines.extend(self.http.iter().map(|h| format!("{} {:?} on endpoint {}", h.methods.join("/"), h.paths, h.endpoint)));
        lines.extend(self.database.iter().map(|d| format!("{} scripts on database endpoint {}", if d.write { "changing" } else { "read-only" }, d.endpoint)));
        lines
    }
}

/// Adds the items of `from` that `into` lacks: the policy's sources add up, rule by rule.
pub(crate) fn extend<T: Clone + PartialEq>(into: &mut Vec<T>, from: &[T]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

/// One endpoint, with the methods and paths the step may use on it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct HttpRule {
    pub endpoint: String,
    /// HTTP methods; read-only `GET` unless stated.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Path globs (without the query string); any path unless stated.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

fn default_paths() -> Vec<String> {
    vec!["/**".into()]
}

/// Which side of the intersection refused a call: the operator needs to know whether to
/// change the policy or to ask the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Declaration,
    Policy,
}

/// A refused host call. The message names the step, the capability and the thing asked for.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum Denial {
    #[error("{what} is not in the capabilities declared by step {step}")]
    NotDeclared { step: String, what: String },
    #[error("{what} is not allowed by the operator's policy (step {step}); widen the policy in canup.toml if it should be")]
    NotInPolicy { step: String, what: String },
    #[error("{what} is refused for every step: {why}")]
    Forbidden { what: String, why: String },
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
}

/// A rule that cannot be compiled (a bad glob) or that no rule may say (a network program, a
/// variable pattern): names its source so a vendor or an operator can fix it.
#[derive(Debug, Error)]
#[error("invalid rule {pattern:?} in {origin}: {why}")]
pub struct PatternError {
    pub pattern: String,
    pub origin: String,
    pub why: String,
}

/// Compiles a glob. `literal_separator` makes `*` stop at `/` (for paths) or not (for
/// arguments, where `/` is an ordinary character).
pub(crate) fn glob(pattern: &str, literal_separator: bool, origin: &str) -> Result<GlobMatcher, PatternError> {
    GlobBuilder::new(pattern).literal_separator(literal_separator).backslash_escape(true).build().map(|g| g.compile_matcher()).map_err(|source| PatternError {
        pattern: pattern.to_owned(),
        origin: origin.to_owned(),
        why: source.to_string(),
    })
}

/// Whether the policy pattern `policy` allows everything the declared pattern `declared`
/// allows. Equal patterns do; otherwise the policy glob must match the declared pattern's text
/// (`/opt/canopsis/**` matches `/opt/canopsis/etc/*.conf`). A declared `**` crosses
/// directories, which only a policy `…/**` with a literal prefix of it can cover: matching
/// its text against a single `*` would admit more than the policy allows.
fn pattern_covers(policy: &str, declared: &str, literal_separator: bool) -> bool {
    if policy == declared {
        return true;
    }
    if declared.contains("**") {
        return policy.strip_suffix("**").is_some_and(|prefix| !prefix.contains(['*', '?', '[', '{', '\\']) && declared.starts_with(prefix));
    }
    glob(policy, literal_separator, "the policy").is_ok_and(|g| g.is_match(declared))
}

fn all_covered<'a>(declared: &'a [String], policy: &[String], literal_separator: bool) -> Option<&'a String> {
    declared.iter().find(|d| !policy.iter().any(|p| pattern_covers(p, d, literal_separator)))
}

impl CapabilitySet {
    /// Whether this policy makes the commands of a declared exec rule read-only queries
    /// (every policy rule that admits them says `readonly`): what the plan shows.
    pub fn query(&self, declared: &ExecRule) -> bool {
        let mut admitting = self.exec.iter().filter(|p| p.program == declared.program && exec::args_cover(&p.args, p.shell, &declared.args)).peekable();
        admitting.peek().is_some() && admitting.all(|p| p.readonly)
    }

    /// Admission at plan time: the part of this declaration `policy` does not grant (empty
    /// when it covers all of it), rule by rule, so that the operator sees every grant a plan
    /// lacks at once and `canup policy review` can write exactly those. The per-call
    /// checkpoint stays authoritative; this stops a plan before anything runs.
    pub fn missing_from(&self, policy: &CapabilitySet) -> CapabilitySet {
        let paths = |declared: &[String], allowed: &[String]| -> Vec<String> {
            declared
                .iter()
                .filter(|d| !allowed.iter().any(|p| pattern_covers(p, d, true)) || policy.fs.deny.iter().any(|p| pattern_covers(p, d, true)))
                .cloned()
                .collect()
        };
        CapabilitySet {
            exec: self
                .exec
                .iter()
                .filter(|d| {
                    !policy.exec.iter().any(|p| {
                        p.program == d.program
                            && exec::args_cover(&p.args, p.shell, &d.args)
                            && d.env.iter().all(|e| p.env.contains(e))
                            && d.users.iter().all(|u| p.users.contains(u))
                            && p.env_file == d.env_file
                    })
                })
                .cloned()
                .collect(),
            fs: FsRules {
                read: paths(&self.fs.read, &policy.fs.read),
                write: paths(&self.fs.write, &policy.fs.write),
                create: paths(&self.fs.create, &policy.fs.create),
                deny: Vec::new(),
            },
            http: self
                .http
                .iter()
                .filter(|d| {
                    !policy.http.iter().any(|p| {
                        p.endpoint == d.endpoint
                            && d.methods.iter().all(|m| p.methods.iter().any(|pm| pm.eq_ignore_ascii_case(m)))
                            && all_covered(&d.paths, &p.paths, true).is_none()
                    })
                })
                .cloned()
                .collect(),
            database: self.database.iter().filter(|d| !policy.database.iter().any(|p| p.endpoint == d.endpoint && (p.write || !d.write))).cloned().collect(),
            units: content::UnitRules::default(),
            compose: content::compose::ComposeRules::default(),
        }
    }

    /// The first grant this declaration lacks under `policy`, or `None`.
    pub fn uncovered_by(&self, policy: &CapabilitySet) -> Option<String> {
        self.missing_from(policy).describe().into_iter().next()
    }
}

/// One side's rules, compiled.
#[derive(Debug, Clone)]
struct Compiled {
    exec: Vec<exec::CompiledExecRule>,
    fs: fs::CompiledFsRules,
    http: Vec<http::CompiledHttpRule>,
    database: Vec<database::DatabaseRule>,
    units: content::CompiledUnitRules,
    compose: content::compose::CompiledComposeRules,
}

impl Compiled {
    fn new(set: &CapabilitySet, origin: &str) -> Result<Self, PatternError> {
        Ok(Self {
            exec: set.exec.iter().map(|r| exec::CompiledExecRule::new(r, origin)).collect::<Result<_, _>>()?,
            fs: fs::CompiledFsRules::new(&set.fs, origin)?,
            http: set.http.iter().map(|r| http::CompiledHttpRule::new(r, origin)).collect::<Result<_, _>>()?,
            database: set.database.clone(),
            units: content::CompiledUnitRules::new(&set.units, origin)?,
            compose: content::compose::CompiledComposeRules::new(&set.compose, origin)?,
        })
    }
}

/// The operator's policy, compiled once for every step of a run: compiling its globs is
/// the costly part of a grant, and it does not change between steps.
#[derive(Debug, Clone)]
pub struct Policy(Arc<Compiled>);

impl Policy {
    pub fn compile(policy: &CapabilitySet) -> Result<Self, PatternError> {
        Ok(Self(Arc::new(Compiled::new(policy, "the operator's policy")?)))
    }
}

/// What one step may do: its declaration intersected with the operator's policy.
#[derive(Debug, Clone)]
pub struct Grant {
    step: String,
    declared: Arc<Compiled>,
    policy: Arc<Compiled>,
}

impl Grant {
    pub fn new(step: &str, declared: &CapabilitySet, policy: &CapabilitySet) -> Result<Self, PatternError> {
        Self::with_policy(step, declared, &Policy::compile(policy)?)
    }

    pub fn with_policy(step: &str, declared: &CapabilitySet, policy: &Policy) -> Result<Self, PatternError> {
        Ok(Self { step: step.to_owned(), declared: Arc::new(Compiled::new(declared, &format!("the manifest of step {step}"))?), policy: policy.0.clone() })
    }

    pub fn step(&self) -> &str {
        &self.step
    }

    /// Applies one check to both sides; the declaration is checked first so that a step
    /// asking for something it never declared is reported as the step's fault.
    fn both(&self, what: impl FnOnce() -> String, allowed: impl Fn(&Compiled) -> bool) -> Result<(), Denial> {
        if !allowed(&self.declared) {
            return Err(Denial::NotDeclared { step: self.step.clone(), what: what() });
        }
        if !allowed(&self.policy) {
            return Err(Denial::NotInPolicy { step: self.step.clone(), what: what() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::exec::ExecRequest;
    use super::fs::Access;
    use super::*;
    use crate::sysroot::Sysroot;

    fn set(toml_text: &str) -> CapabilitySet {
        toml::from_str(toml_text).unwrap()
    }

    /// The `[policy]` table of the shipped `canup.toml` (the configuration module depends on
    /// this one, not back).
    pub(crate) fn shipped_policy() -> CapabilitySet {
        #[derive(serde::Deserialize)]
        struct Shipped {
            policy: CapabilitySet,
        }
        toml::from_str::<Shipped>(include_str!("../../dist/policy.toml")).unwrap().policy
    }

    /// The shipped `[policy.fs]`: the published steps' files, and no new drop-in.
    #[test]
    fn the_shipped_policy_refuses_a_new_drop_in_and_files_outside_canopsis() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("etc/systemd/system/canopsis-engine-go@.service.d");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("che.conf"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("opt/canopsis/etc")).unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let anything = set("[fs]\nread = [\"/**\"]\nwrite = [\"/**\"]\ncreate = [\"/**\"]\n");
        let g = Grant::new("s", &anything, &shipped_policy()).unwrap();
        let allowed = |path: &str, access| g.check_fs(&root, path, access).is_ok();
        assert!(allowed("/etc/systemd/system/canopsis-engine-go@.service.d/che.conf", Access::Write));
        assert!(allowed("/opt/canopsis/etc/initialisation.toml", Access::Write), "3.39.0 creates it");
        for refused in [
            "/etc/systemd/system/canopsis-engine-go@.service.d/zz-evil.conf",
            "/etc/systemd/system/canopsis-engine-go@.service",
            "/opt/canopsis/etc/new.toml",
            "/etc/cron.d/canopsis",
            "/root/.ssh/authorized_keys",
        ] {
            let e = g.check_fs(&root, refused, Access::Write).unwrap_err();
            assert!(matches!(e, Denial::NotInPolicy { .. }), "{refused}: {e}");
        }
        assert!(!allowed("/etc/shadow", Access::Read));
    }

    fn req(program: &str, args: &[&str]) -> ExecRequest {
        ExecRequest { program: program.into(), args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    const YUM: &str = r#"
[[exec]]
program = "/usr/bin/yum"
args = ["--disablerepo=[*]", "--enablerepo=canopsis[*]", "update", "-y", "**"]
[[exec]]
program = "/usr/bin/systemctl"
args = ["enable", "canopsis-engine-go@*"]
users = ["canopsis"]
"#;

    #[test]
    fn argument_patterns_one_rest_and_literal_star() {
        let g = Grant::new("s", &set(YUM), &set(YUM)).unwrap();
        let yum = ["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y"];
        assert!(g.check_exec(&req("/usr/bin/yum", &[&yum[..], &["canopsis-core-3.40.0", "canopsis-cat-3.40.0"]].concat())).is_ok());
        assert!(g.check_exec(&req("/usr/bin/yum", &yum)).is_ok(), "** matches nothing too");
        // [*] is a literal star: another repo glob is not the declared one.
        assert!(g.check_exec(&req("/usr/bin/yum", &["--disablerepo=epel", "--enablerepo=canopsis*", "update", "-y"])).is_err());
        assert!(g.check_exec(&req("/usr/bin/yum", &["--disablerepo=*", "--enablerepo=canopsis*", "remove", "-y", "x"])).is_err());
        // * is exactly one argument, including one with slashes.
        assert!(g.check_exec(&req("/usr/bin/systemctl", &["enable", "canopsis-engine-go@engine-fifo"])).is_ok());
        assert!(g.check_exec(&req("/usr/bin/systemctl", &["enable", "canopsis-engine-go@a", "extra"])).is_err());
        assert!(g.check_exec(&req("/usr/bin/systemctl", &["enable"])).is_err());
    }

    #[test]
    fn users_and_environment_must_be_declared_by_the_same_rule() {
        let g = Grant::new("s", &set(YUM), &set(YUM)).unwrap();
        let mut r = req("/usr/bin/systemctl", &["enable", "canopsis-engine-go@x"]);
        r.user = Some("canopsis".into());
        assert!(g.check_exec(&r).is_ok());
        r.user = Some("root".into());
        let e = g.check_exec(&r).unwrap_err().to_string();
        assert!(e.contains("exec of /usr/bin/systemctl as user root"), "{e}");
        r.user = None;
        r.env = vec![("CPS_AMQP_URL".into(), "amqp://".into())];
        assert!(g.check_exec(&r).unwrap_err().to_string().contains("environment variables [\"CPS_AMQP_URL\"]"));
    }

    #[test]
    fn forbidden_variables_and_malformed_requests() {
        // No rule grants a variable by pattern, nor one of the forbidden names.
        for bad in ["*", "CPS_*", "PYTHONWARNINGS", "BROWSER", "PATH", "LD_PRELOAD", "https_proxy", "A-B"] {
            let rule = set(&format!("[[exec]]\nprogram = \"/bin/x\"\nenv = [{bad:?}]\n"));
            let e = Grant::new("s", &rule, &CapabilitySet::default()).unwrap_err().to_string();
            assert!(e.contains(bad) && (e.contains("exact name") || e.contains("refused to every program")), "{bad}: {e}");
            assert!(Policy::compile(&rule).is_err(), "{bad}");
        }
        let named = set("[[exec]]\nprogram = \"/bin/x\"\nenv = [\"CPS_MONGO_URL\", \"_X1\"]\n");
        let g = Grant::new("s", &named, &named).unwrap();
        let listed = super::exec::CODE_LOADING_ENV.iter().chain(super::exec::FORBIDDEN_ENV).map(|p| p.replace('*', "X"));
        let examples = [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "BASH_FUNC_ls%%",
            "BASH_FUNC_yum()",
            "PYTHONWARNINGS",
            "SYSTEMD_EDITOR",
            "OPENSSL_CONF",
            "http_proxy",
        ];
        for name in listed.chain(examples.map(String::from)) {
            let mut r = req("/bin/x", &[]);
            r.env = vec![(name.clone(), "x".into())];
            assert!(matches!(g.check_exec(&r), Err(Denial::Forbidden { .. })), "{name}");
        }
        for name in ["A=B", "A-B", "1X", "", "A B", "CPS\u{e9}"] {
            let mut r = req("/bin/x", &[]);
            r.env = vec![(name.into(), "x".into())];
            assert!(matches!(g.check_exec(&r), Err(Denial::Invalid { .. })), "{name:?}");
        }
        let mut r = req("/bin/x", &[]);
        r.env = vec![("CPS_MONGO_URL".into(), "mongodb://x".into()), ("_X1".into(), String::new())];
        assert!(g.check_exec(&r).is_ok());
        r.env.push(("CPS_OTHER".into(), String::new()));
        assert!(matches!(g.check_exec(&r), Err(Denial::NotDeclared { .. })), "a name no rule grants");
        assert!(matches!(g.check_exec(&req("/bin/../bin/x", &[])), Err(Denial::Invalid { .. })));
        for cwd in ["relative", "/opt/../..", "/opt/./x"] {
            let mut r = req("/bin/x", &[]);
            r.cwd = Some(cwd.into());
            assert!(matches!(g.check_exec(&r), Err(Denial::Invalid { .. })), "{cwd}");
        }
    }

    #[test]
    fn no_rule_names_a_network_program_and_no_package_is_a_local_file() {
        for program in ["/usr/bin/mongo", "/usr/bin/redis-cli", "/usr/bin/psql", "/usr/bin/curl", "/opt/x/bin/mongosh"] {
            let rule = set(&format!("[[exec]]\nprogram = {program:?}\nargs = [\"**\"]\n"));
            let e = Policy::compile(&rule).unwrap_err().to_string();
            assert!(e.contains(program) && e.contains("database endpoint"), "{e}");
        }
        let yum = set("[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"update\", \"-y\", \"canopsis*-[0-9]*...\"]\n");
        let g = Grant::new("s", &yum, &yum).unwrap();
        assert!(g.check_exec(&req("/usr/bin/yum", &["update", "-y", "canopsis-core-24.04.3"])).is_ok());
        for planted in ["canopsis-core-24.04.3.rpm", "canopsis-core-9.RPM"] {
            let e = g.check_exec(&req("/usr/bin/yum", &["update", "-y", planted])).unwrap_err();
            assert!(matches!(e, Denial::Forbidden { .. }) && e.to_string().contains("local package file"), "{planted}: {e}");
        }
    }

    /// A command is a query (runs in a dry run, is not journaled) on the operator's word only.
    #[test]
    fn read_only_is_the_policys_word_not_the_steps() {
        let claims = set("[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"update\", \"-y\", \"canopsis-core-*\"]\nreadonly = true\n");
        let policy = set("[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"update\", \"-y\", \"canopsis-core-*\"]\n");
        let yum = req("/usr/bin/yum", &["update", "-y", "canopsis-core-3.40.0"]);
        let g = Grant::new("s", &claims, &policy).unwrap();
        assert!(g.check_exec(&yum).is_ok());
        assert!(!g.exec_is_readonly(&yum), "the step alone made yum a query");
        assert!(!policy.query(&claims.exec[0]));
        let rpm_policy = set("[[exec]]\nprogram = \"/usr/bin/rpm\"\nargs = [\"-q\", \"canopsis-core|canopsis-cat\"]\nreadonly = true\n");
        let rpm_step = set("[[exec]]\nprogram = \"/usr/bin/rpm\"\nargs = [\"-q\", \"canopsis-core\"]\n");
        let g = Grant::new("s", &rpm_step, &rpm_policy).unwrap();
        assert!(g.exec_is_readonly(&req("/usr/bin/rpm", &["-q", "canopsis-core"])));
        assert!(rpm_policy.query(&rpm_step.exec[0]));
        // Two policy rules admit it and one does not say read-only: not a query.
        let mixed = set(
            "[[exec]]\nprogram = \"/usr/bin/rpm\"\nargs = [\"-q\", \"*\"]\nreadonly = true\n[[exec]]\nprogram = \"/usr/bin/rpm\"\nargs = [\"-q\", \"canopsis-*\"]\n",
        );
        let g = Grant::new("s", &rpm_step, &mixed).unwrap();
        assert!(!g.exec_is_readonly(&req("/usr/bin/rpm", &["-q", "canopsis-core"])));
    }

    #[test]
    fn declaration_is_blamed_before_policy() {
        let declared = set("[[exec]]\nprogram = \"/bin/a\"\n");
        let policy = set("[[exec]]\nprogram = \"/bin/b\"\n");
        let g = Grant::new("step-1", &declared, &policy).unwrap();
        assert!(matches!(g.check_exec(&req("/bin/b", &[])), Err(Denial::NotDeclared { .. })));
        let e = g.check_exec(&req("/bin/a", &[])).unwrap_err();
        assert!(matches!(e, Denial::NotInPolicy { .. }));
        assert!(e.to_string().contains("widen the policy in canup.toml"), "{e}");
    }

    #[test]
    fn empty_rules_deny_everything() {
        let g = Grant::new("s", &CapabilitySet::default(), &CapabilitySet::default()).unwrap();
        assert!(g.check_exec(&req("/bin/true", &[])).is_err());
        assert!(g.check_http("api", "GET", "/", &[]).is_err());
        assert!(g.check_fs(&Sysroot::host(), "/etc/hostname", Access::Read).is_err());
    }

    #[test]
    fn path_globs_stay_within_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("opt/canopsis/etc/sub")).unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let caps = set("[fs]\nread = [\"/opt/canopsis/etc/*.conf\"]\nwrite = [\"/opt/canopsis/etc/**\"]\n");
        let g = Grant::new("s", &caps, &caps).unwrap();
        assert!(g.check_fs(&root, "/opt/canopsis/etc/webserver.conf", Access::Read).is_ok());
        assert!(g.check_fs(&root, "/opt/canopsis/etc/sub/x.conf", Access::Read).is_err(), "* does not cross /");
        assert!(g.check_fs(&root, "/opt/canopsis/etc/sub/x.conf", Access::Write).is_err(), "write alone does not create");
        std::fs::write(dir.path().join("opt/canopsis/etc/sub/x.conf"), "").unwrap();
        assert!(g.check_fs(&root, "/opt/canopsis/etc/sub/x.conf", Access::Write).is_ok());
        assert!(g.check_fs(&root, "/opt/canopsis/VERSION.txt", Access::Write).is_err());
        // `..` through a directory that does not exist cannot be resolved: refused.
        assert!(g.check_fs(&root, "/opt/canopsis/etc/nope/../webserver.conf", Access::Read).is_err());
        assert!(g.check_fs(&root, "relative.conf", Access::Read).is_err());
        // Resolved through existing directories, `..` is judged by where it leads.
        let r = g.check_fs(&root, "/opt/canopsis/etc/sub/../webserver.conf", Access::Read).unwrap();
        assert_eq!(r.logical, std::path::Path::new("/opt/canopsis/etc/webserver.conf"));
    }

    /// A new file is a grant of its own, from both sides: with write alone a step may change
    /// the drop-ins that exist, never add one.
    #[test]
    fn creating_a_file_needs_create_from_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/systemd/system/canopsis-engine-go@.service.d")).unwrap();
        std::fs::write(dir.path().join("etc/systemd/system/canopsis-engine-go@.service.d/che.conf"), "").unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let write = set("[fs]\nwrite = [\"/etc/systemd/system/canopsis*/*.conf\"]\n");
        let create = set("[fs]\nwrite = [\"/etc/systemd/system/canopsis*/*.conf\"]\ncreate = [\"/etc/systemd/system/canopsis*/*.conf\"]\n");
        let existing = "/etc/systemd/system/canopsis-engine-go@.service.d/che.conf";
        let new = "/etc/systemd/system/canopsis-engine-go@.service.d/evil.conf";
        let g = Grant::new("s", &write, &write).unwrap();
        assert!(g.check_fs(&root, existing, Access::Write).is_ok_and(|r| !r.creatable));
        let e = g.check_fs(&root, new, Access::Write).unwrap_err();
        assert!(
            matches!(e, Denial::NotDeclared { .. }) && e.to_string().contains("creation of /etc/systemd/system/canopsis-engine-go@.service.d/evil.conf"),
            "{e}"
        );
        let e = Grant::new("s", &create, &write).unwrap().check_fs(&root, new, Access::Write).unwrap_err();
        assert!(matches!(e, Denial::NotInPolicy { .. }), "{e}");
        assert!(Grant::new("s", &create, &create).unwrap().check_fs(&root, new, Access::Write).is_ok_and(|r| r.creatable));
    }

    #[test]
    fn http_paths_methods_and_reserved_headers() {
        let caps = set(
            "[[http]]\nendpoint = \"rabbitmq\"\npaths = [\"/api/queues/canopsis\", \"/api/bindings/canopsis/**\"]\n[[http]]\nendpoint = \"canopsis-api\"\nmethods = [\"POST\", \"DELETE\"]\npaths = [\"/api/v4/broadcast-message/**\", \"/api/v4/broadcast-message\"]\n",
        );
        let g = Grant::new("s", &caps, &caps).unwrap();
        assert!(g.check_http("rabbitmq", "GET", "/api/queues/canopsis?columns=name,messages", &[]).is_ok());
        assert!(g.check_http("rabbitmq", "DELETE", "/api/queues/canopsis", &[]).is_err(), "GET only by default");
        assert!(g.check_http("rabbitmq", "GET", "/api/queues/canopsis/../../users", &[]).is_err());
        assert!(g.check_http("rabbitmq", "GET", "/api/queues/canopsis/.%2E/x", &[]).is_err());
        // Matched as the server decodes it: an encoded separator or a malformed escape is
        // refused, an encoded ordinary character is matched decoded.
        for path in [
            "/api/bindings/canopsis/x%2F..%2F..%2Fusers",
            "/api/bindings/canopsis/x%5C..",
            "/api/bindings/canopsis/%zz",
            "/api/bindings/canopsis/%2",
            "/api/bindings/canopsis/%00",
        ] {
            assert!(matches!(g.check_http("rabbitmq", "GET", path, &[]), Err(Denial::Invalid { .. })), "{path}");
        }
        assert!(g.check_http("rabbitmq", "GET", "/api/bindings/canopsis/e/Engine%5Fche", &[]).is_ok());
        assert!(g.check_http("rabbitmq", "GET", "/api/queues/canopsi%73", &[]).is_ok(), "decoded before matching");
        assert!(g.check_http("rabbitmq", "GET", "/api/queues/%63anopsis/../x", &[]).is_err());
        assert!(g.check_http("rabbitmq", "GET", "//evil.example/x", &[]).is_err());
        assert!(g.check_http("rabbitmq", "GET", "/api/users", &[]).is_err());
        assert!(g.check_http("canopsis-api", "POST", "/api/v4/broadcast-message", &[("content-type".into(), "application/json".into())]).is_ok());
        assert!(g.check_http("canopsis-api", "DELETE", "/api/v4/broadcast-message/b1", &[]).is_ok());
        assert!(matches!(g.check_http("canopsis-api", "POST", "/api/v4/broadcast-message", &[("Cookie".into(), "x".into())]), Err(Denial::Forbidden { .. })));
        assert!(g.check_http("canopsis-api", "post", "/api/v4/broadcast-message", &[]).is_err());
    }

    #[test]
    fn admission_coverage_of_patterns() {
        let policy = set(
            "[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"--disablerepo=[*]\", \"--enablerepo=canopsis[*]\", \"update\", \"-y\", \"**\"]\n[fs]\nread = [\"/opt/canopsis/**\"]\nwrite = [\"/opt/canopsis/etc/*\"]\n[[http]]\nendpoint = \"rabbitmq\"\nmethods = [\"GET\", \"DELETE\"]\npaths = [\"/api/**\"]\n",
        );
        let ok = set(
            "[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"--disablerepo=[*]\", \"--enablerepo=canopsis[*]\", \"update\", \"-y\", \"canopsis-core-*\"]\n[fs]\nread = [\"/opt/canopsis/etc/**\"]\nwrite = [\"/opt/canopsis/etc/*.conf\"]\n[[http]]\nendpoint = \"rabbitmq\"\npaths = [\"/api/queues/canopsis\"]\n",
        );
        assert_eq!(ok.uncovered_by(&policy), None);
        let wider_write = set("[fs]\nwrite = [\"/opt/canopsis/etc/**\"]\n");
        assert_eq!(wider_write.uncovered_by(&policy).as_deref(), Some("write of /opt/canopsis/etc/**"));
        let other_repo = set("[[exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"--disablerepo=[*]\", \"--enablerepo=[*]\", \"update\", \"-y\"]\n");
        assert!(other_repo.uncovered_by(&policy).is_some());
        let post = set("[[http]]\nendpoint = \"rabbitmq\"\nmethods = [\"POST\"]\n");
        assert!(post.uncovered_by(&policy).unwrap().contains("POST"));
        let outside = set("[fs]\nread = [\"/etc/**\"]\n");
        assert_eq!(outside.uncovered_by(&policy).as_deref(), Some("read of /etc/**"));
    }

    #[test]
    fn a_bad_pattern_names_its_origin() {
        let bad = set("[fs]\nread = [\"/opt/[unclosed\"]\n");
        let e = Grant::new("3.39.0/x", &bad, &CapabilitySet::default()).unwrap_err().to_string();
        assert!(e.contains("/opt/[unclosed") && e.contains("the manifest of step 3.39.0/x"), "{e}");
    }
}
