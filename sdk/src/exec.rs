//! Run a program. There is no shell and no PATH: name the program by absolute path and pass
//! each argument separately, exactly as declared in the step's capabilities.

use std::time::Duration;

use crate::bindings::canup::step::exec as wit;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Command {
    cmd: wit::Command,
}

impl Command {
    pub fn new(program: &str) -> Self {
        Self { cmd: wit::Command { program: program.to_owned(), args: Vec::new(), env: Vec::new(), cwd: None, user: None, stdin: None, timeout_ms: None } }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.cmd.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds one variable. The program gets only the variables passed here.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.cmd.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<I: IntoIterator<Item = (K, V)>, K: Into<String>, V: Into<String>>(mut self, vars: I) -> Self {
        self.cmd.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cmd.cwd = Some(dir.into());
        self
    }

    /// Runs the program as this user (declared in the capability's `users`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.cmd.user = Some(user.into());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.cmd.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.cmd.timeout_ms = Some(timeout.as_millis().min(u32::MAX as u128) as u32);
        self
    }

    /// A shell-like rendering for logs and error messages; an argument past 200 characters is
    /// cut (the host bounds a step's error, and the reason comes after the command).
    pub fn display(&self) -> String {
        let shown = |a: &String| match a.char_indices().nth(200) {
            Some((end, _)) => format!("{}… ({} bytes)", quote(&a[..end]), a.len()),
            None => quote(a),
        };
        std::iter::once(&self.cmd.program).chain(&self.cmd.args).map(shown).collect::<Vec<_>>().join(" ")
    }

    /// Runs the program and returns its output whatever its exit status.
    pub fn output(&self) -> Result<Output> {
        wit::run(&self.cmd).map(Output).map_err(|e| Error::from(e).context(format!("running {}", self.display())))
    }

    /// Runs the program and fails unless it exits with status 0; the error carries the end
    /// of its stderr, and of its stdout when it wrote one: tools such as dnf say the cause
    /// there ("No match for argument: …") and only a summary on stderr.
    pub fn run(&self) -> Result<Output> {
        self.output()?.succeeded(&self.display())
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command's outcome (the generated type stays inside the SDK).
#[derive(Debug, Clone)]
pub struct Output(wit::Output);

impl Output {
    pub(crate) fn new(o: wit::Output) -> Self {
        Self(o)
    }

    /// The output when the status is 0, else an error naming `what` with the end of its
    /// stderr, and of its stdout when it wrote one.
    pub(crate) fn succeeded(self, what: &str) -> Result<Output> {
        if self.success() {
            return Ok(self);
        }
        let tail =
            |text: &str| text.lines().filter(|l| !l.trim().is_empty()).rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ");
        let (stderr, stdout) = (tail(&self.stderr_text()), tail(&self.stdout_text()));
        Err(Error::msg(format!(
            "{what} exited with {}{}{}",
            self.0.status.map_or("a signal".to_owned(), |c| format!("status {c}")),
            if stderr.is_empty() { String::new() } else { format!(": {stderr}") },
            if stdout.is_empty() { String::new() } else { format!(" (its output ended: {stdout})") }
        )))
    }

    pub fn success(&self) -> bool {
        self.0.status == Some(0)
    }
    pub fn status(&self) -> Option<i32> {
        self.0.status
    }
    pub fn stdout(&self) -> &[u8] {
        &self.0.stdout
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn truncated(&self) -> bool {
        self.0.stdout_truncated || self.0.stderr_truncated
    }
    /// True in a dry run: nothing was executed.
    pub fn simulated(&self) -> bool {
        self.0.simulated
    }
}
