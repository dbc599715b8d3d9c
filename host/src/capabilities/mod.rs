//! Capabilities: what a step may touch.
//!
//! A step carries a signed *declaration* of the capabilities it needs; the operator's *policy*
//! is an upper bound on what any step may get. A call is allowed only when both allow it (the
//! intersection), and everything not listed is denied. There is exactly one checkpoint per
//! host call: [`Grant::check_exec`], [`Grant::check_fs`] and [`Grant::check_http`].
//!
//! The rules are data (TOML in manifests and `canup.toml`); this module compiles them into
//! matchers once per step so a host call costs a few glob matches.

pub mod exec;
pub mod fs;
pub mod http;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The capability rules of one side (a step's declaration or the operator's policy).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
}

/// One program and the argument lists it may be run with.
///
/// `args` is a list of per-argument glob patterns: `*` matches any one argument, `**` (last
/// only) matches all remaining arguments, and a literal `*` inside an argument is written `[*]`
/// (for example `--disablerepo=[*]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
}

/// Path globs (`*` stays within one directory, `**` crosses directories), read and write kept
/// separate: a step that edits a file declares it in both.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FsRules {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

/// One endpoint, with the methods and paths the step may use on it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
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

/// A pattern that failed to compile names its source so a vendor can fix the manifest.
#[derive(Debug, Error)]
#[error("invalid pattern {pattern:?} in {origin}: {source}")]
pub struct PatternError {
    pub pattern: String,
    pub origin: String,
    #[source]
    pub source: globset::Error,
}

/// Compiles a glob. `literal_separator` makes `*` stop at `/` (for paths) or not (for
/// arguments, where `/` is an ordinary character).
pub(crate) fn glob(pattern: &str, literal_separator: bool, origin: &str) -> Result<GlobMatcher, PatternError> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| PatternError { pattern: pattern.to_owned(), origin: origin.to_owned(), source })
}

/// One side's rules, compiled.
#[derive(Debug, Clone)]
struct Compiled {
    exec: Vec<exec::CompiledExecRule>,
    fs: fs::CompiledFsRules,
    http: Vec<http::CompiledHttpRule>,
}

impl Compiled {
    fn new(set: &CapabilitySet, origin: &str) -> Result<Self, PatternError> {
        Ok(Self {
            exec: set.exec.iter().map(|r| exec::CompiledExecRule::new(r, origin)).collect::<Result<_, _>>()?,
            fs: fs::CompiledFsRules::new(&set.fs, origin)?,
            http: set.http.iter().map(|r| http::CompiledHttpRule::new(r, origin)).collect::<Result<_, _>>()?,
        })
    }
}

/// What one step may do: its declaration intersected with the operator's policy.
#[derive(Debug, Clone)]
pub struct Grant {
    step: String,
    declared: Compiled,
    policy: Compiled,
}

impl Grant {
    pub fn new(step: &str, declared: &CapabilitySet, policy: &CapabilitySet) -> Result<Self, PatternError> {
        Ok(Self {
            step: step.to_owned(),
            declared: Compiled::new(declared, &format!("the manifest of step {step}"))?,
            policy: Compiled::new(policy, "the operator's policy")?,
        })
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
