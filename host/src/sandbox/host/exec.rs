//! `canup:step/exec`: a command, checked against the step's exec rules, then run (or, in a
//! dry run, listed), journaled under apply so that a resumed step never runs it twice.

use std::time::{Duration, Instant};

use serde_json::json;

use super::super::bindings::{ErrorKind, WitError, wit, wit_error};
use super::super::call::{Done, Effect, StepState, exit_text, journal_text, shell_words};
use crate::capabilities::exec::{self as cap_exec, ExecRequest};
use crate::journal::ActionResult;
use crate::sha256_hex;
use crate::ui::Level;

impl wit::exec::Host for StepState {
    async fn run(&mut self, cmd: wit::exec::Command) -> Result<wit::exec::Output, WitError> {
        let start = Instant::now();
        let req = ExecRequest {
            program: cmd.program,
            args: cmd.args,
            env: cmd.env,
            cwd: cmd.cwd,
            user: cmd.user,
            stdin: cmd.stdin,
            timeout: cmd.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
            host_env: Vec::new(),
        };
        // Values are left out of the audit: they can hold credentials (CPS_AMQP_URL...).
        let env_names: Vec<&str> = req.env.iter().map(|(k, _)| k.as_str()).collect();
        let input = req.stdin.as_deref().map(|data| Input { data: self.release_data_named(data), sha256: sha256_hex(data) });
        let mut args = json!({ "program": req.program, "args": req.args, "env": env_names, "cwd": req.cwd, "user": req.user });
        if let (Some(input), Some(stdin)) = (&input, &req.stdin) {
            args["stdin"] = json!({ "data": input.data, "sha256": input.sha256, "bytes": stdin.len() });
        }
        if let Some(file) = self.env.grant.exec_env_file(&req) {
            args["env_file"] = json!(file);
        }
        let result = match self.check_command(&req, input.as_ref()) {
            Err(e) => Err(e),
            Ok(req) => self.exec_allowed(req, input.as_ref()).await,
        };
        self.conclude(start, "exec", args, result, "ran before the interruption", |o| exit_text(o.status))
    }
}

/// What a command gets on its standard input: the release data file it is (none: the step's
/// own bytes, refused), and their digest.
struct Input {
    data: Option<String>,
    sha256: String,
}

impl StepState {
    /// The name of the release data file whose content `data` is, if any.
    fn release_data_named(&self, data: &[u8]) -> Option<String> {
        self.env.data.iter().find(|(_, d)| d.as_slice() == data).map(|(name, _)| name.clone())
    }

    /// The checks a command passes besides its rules: its input is signed release data (what
    /// a step pipes to a program is code for it: a script the vendor signed, named in the
    /// listing and the audit), its arguments fit the host's bound, and its working directory
    /// is one the step may read, resolved beneath the sysroot like any path of the step
    /// (never `/tmp`, where anyone can leave a file the program would take).
    fn check_command(&self, req: &ExecRequest, input: Option<&Input>) -> Result<ExecRequest, WitError> {
        let size: usize = req.args.iter().map(String::len).sum::<usize>() + req.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > self.env.limits.exec_args {
            return Err(wit_error(
                ErrorKind::Invalid,
                format!(
                    "exec of {}: {size} bytes of arguments and variables, over the limit of {} bytes (exec_args_kib in canup.toml)",
                    req.program, self.env.limits.exec_args
                ),
            ));
        }
        self.env.grant.check_exec(req).map_err(WitError::from)?;
        if input.is_some_and(|i| i.data.is_none()) {
            return Err(WitError::from(crate::capabilities::Denial::Forbidden {
                what: format!("input for {}", req.program),
                why: format!(
                    "a command's standard input must be one of the signed data files of release {} (context.data), byte for byte",
                    self.env.context.release
                ),
            }));
        }
        let mut checked = req.clone();
        if let Some(cwd) = &req.cwd {
            let resolved = self.env.grant.check_fs(&self.env.sysroot, cwd, crate::capabilities::fs::Access::Read).map_err(|d| {
                WitError::from(crate::capabilities::Denial::Invalid { what: format!("working directory {cwd} of {}", req.program), why: d.to_string() })
            })?;
            checked.cwd = Some(resolved.logical.display().to_string());
        }
        Ok(checked)
    }

    /// A checked command with its env_file's variables, shown and journaled as a command.
    async fn exec_allowed(&mut self, req: ExecRequest, input: Option<&Input>) -> Result<Done<wit::exec::Output>, WitError> {
        let host_env = self.host_env(&req)?;
        let changing = !self.env.grant.exec_is_readonly(&req);
        let words = shell_words(&req.program, &req.args);
        let input = input.zip(req.stdin.as_deref()).map(|(input, data)| {
            let name = input.data.as_deref().unwrap_or_default();
            format!(" < release data {name} ({} bytes, sha256 {}):\n{}", data.len(), &input.sha256[..16], super::fs::indent(&String::from_utf8_lossy(data)))
        });
        let listed = if changing {
            let user = req.user.as_ref().map(|u| format!(" (as {u})")).unwrap_or_default();
            let names = req.env.iter().chain(&host_env).map(|(k, _)| format!("{k}=… "));
            format!("run: {}{words}{user}{}", names.collect::<String>(), input.unwrap_or_default())
        } else {
            format!("query: {words}{}", input.unwrap_or_default())
        };
        let shown = Shown { changing, listed, action: exec_action(&req), words, finish: None };
        self.run_allowed(&ExecRequest { host_env, ..req }, shown).await
    }
}

/// How an allowed command shows: the dry run's line, the journal's name for it (when it
/// changes something), and its words in progress and log lines.
pub(super) struct Shown {
    pub changing: bool,
    pub listed: String,
    pub action: String,
    pub words: String,
    /// Reads the output before the step and the journal get it (see `capabilities::database`).
    pub finish: Option<Finish>,
}

/// What reads a command's output before the step and the journal get it.
pub(super) type Finish = Box<dyn Fn(&mut cap_exec::ExecOutput) + Send + Sync>;

fn output(status: Option<i32>, stdout: Vec<u8>, stderr: Vec<u8>, truncated: (bool, bool), simulated: bool) -> wit::exec::Output {
    wit::exec::Output { status, stdout, stderr, stdout_truncated: truncated.0, stderr_truncated: truncated.1, simulated }
}

impl StepState {
    /// An allowed command: listed in a dry run (a read-only query also runs), otherwise run,
    /// and under apply journaled, so that a resumed step neither runs it twice nor loses it.
    pub(super) async fn run_allowed(&mut self, req: &ExecRequest, shown: Shown) -> Result<Done<wit::exec::Output>, WitError> {
        let dry = self.env.context.dry_run;
        let Shown { changing, listed, action, words, finish } = shown;
        if dry && changing {
            self.record(listed)?;
            return Ok(Done::Now(output(Some(0), vec![], vec![], (false, false), true)));
        }
        if dry {
            // A read-only query runs for real in a dry run; listing it makes the list the
            // whole set of commands the real run would run.
            self.record(listed)?;
        }
        // A changing command an earlier attempt of this step already ran is not run again.
        let (slot, replay) = self.journaled(Effect::Command, (!dry && changing).then_some(action));
        let receipt = slot.as_ref().and_then(|(key, n)| self.env.actions.as_ref().map(|a| a.receipt(key, *n)));
        if let Some(done) = replay {
            if let Some(r) = &receipt {
                // Left when a crash came between the journal record and its removal.
                r.remove();
            }
            self.env.ui.log(&self.env.context.step_id, Level::Info, &format!("not run again (it ran before the interruption): {words}"));
            return Ok(Done::Replayed(output(done.status, done.stdout.into_bytes(), done.stderr.into_bytes(), (false, false), false)));
        }
        let earlier = match &receipt {
            Some(r) => self.earlier_attempt(r, &words).await,
            None => Ok(None),
        };
        let outcome = match earlier {
            Ok(Some(finished)) => Ok(finished),
            Ok(None) => {
                // The operator hears that a long command still runs, how long it has and may,
                // and what it said last.
                let limit = self.env.grant.exec_time_limit(req, &self.env.limits.exec);
                let (ui, step, words) = (self.env.ui.clone(), self.env.context.step_id.clone(), words.clone());
                let (after, allowed) = (limit.after, humantime::format_duration(limit.after).to_string());
                let still = move |ran: Duration, said: Option<String>| {
                    let ran_for = humantime::format_duration(Duration::from_secs(ran.as_secs()));
                    let said = said.map(|l| format!(": {l}")).unwrap_or_default();
                    ui.progress(&step, ran.as_secs(), Some(after.as_secs()), &format!("still running after {ran_for} (limit {allowed}): {words}{said}"));
                };
                let watch = cap_exec::Watch { limit, every: self.env.limits.exec.progress_every, still: Some(&still) };
                cap_exec::run(req, &self.env.sysroot, &self.env.limits.exec, receipt.as_ref(), &watch).await
            }
            Err(e) => Err(e),
        };
        // What the command's output means (a database client's): read before the journal keeps it.
        let outcome = outcome.map(|mut o| {
            if let Some(finish) = &finish {
                finish(&mut o);
            }
            o
        });
        let journaled = match &outcome {
            Ok(o) => Some(ActionResult { status: o.status, stdout: journal_text(&o.stdout), stderr: journal_text(&o.stderr) }),
            // Journaled as a failure: the next attempt runs the command again and does not
            // take the receipt of the killed command for the trace of a crash.
            Err(e @ cap_exec::ExecError::Timeout { .. }) => Some(ActionResult { status: None, stdout: String::new(), stderr: e.to_string() }),
            Err(_) => None,
        };
        if let Some(result) = journaled {
            self.journal_done(&slot, result)?;
            if let Some(r) = &receipt {
                r.remove();
            }
        }
        let o = outcome?;
        Ok(Done::Now(output(o.status, o.stdout, o.stderr, (o.stdout_truncated, o.stderr_truncated), false)))
    }
    /// What an interrupted canup's attempt at this changing command left in its receipt: the
    /// outcome of a command that finished (journaled, and given to the step as its own), or
    /// nothing when the command must run (it never started, or its outcome is lost). A command
    /// still running is waited for.
    async fn earlier_attempt(&mut self, receipt: &cap_exec::Receipt, words: &str) -> Result<Option<cap_exec::ExecOutput>, cap_exec::ExecError> {
        let words = || words.to_owned();
        let (ui, step) = (self.env.ui.clone(), self.env.context.step_id.clone());
        let earlier = receipt
            .earlier(&self.env.limits.exec, |pid| {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                ui.log(&step, Level::Info, &format!("waiting for {}{pid}, which the interrupted run started and is still running", words()));
            })
            .await?;
        match earlier {
            cap_exec::Earlier::NeverRan => Ok(None),
            cap_exec::Earlier::Interrupted => {
                self.env.ui.log(&step, Level::Warn, &format!("{} was interrupted with the run before it (its shell died without an exit status): whether it took effect is unknown; running it again", words()));
                Ok(None)
            }
            cap_exec::Earlier::Finished(o) => {
                self.env.ui.log(&step, Level::Info, &format!("not run again (it finished after the interruption, {}): {}", exit_text(o.status), words()));
                Ok(Some(o))
            }
        }
    }

    /// The variables of the command's `env_file` (see `ExecRule::env_file`), read by the host
    /// beneath the sysroot; none when its rule names no file.
    fn host_env(&self, req: &ExecRequest) -> Result<Vec<(String, String)>, WitError> {
        let Some(file) = self.env.grant.exec_env_file(req) else { return Ok(Vec::new()) };
        let text = crate::capabilities::fs::read_for_host(&self.env.sysroot, file, self.env.limits.fs_read)
            .map_err(|e| wit_error(ErrorKind::NotFound, format!("{file}, the environment of {}, cannot be read: {e}", req.program)))?;
        let vars = crate::capabilities::database::parse_env_file(&String::from_utf8_lossy(&text));
        if let Some((name, pattern)) = vars.iter().find_map(|(k, _)| cap_exec::code_loading_env(k).map(|p| (k, p))) {
            return Err(wit_error(
                ErrorKind::Denied,
                format!("{file} sets {name}: {pattern} lets a program load code of the caller's choosing; canup passes no such file to {}", req.program),
            ));
        }
        Ok(vars)
    }
}

/// How the journal names a changing command: readable, and exact through the digest of
/// everything that makes it this command (environment values, input, user, directory).
fn exec_action(req: &ExecRequest) -> String {
    let identity =
        json!({ "program": req.program, "args": req.args, "env": req.env, "cwd": req.cwd, "user": req.user, "stdin": req.stdin.as_deref().map(sha256_hex) });
    format!("exec {} #{}", shell_words(&req.program, &req.args), &sha256_hex(identity.to_string().as_bytes())[..16])
}
