//! The sandbox: runs one step component with no ambient authority.
//!
//! Each step gets a fresh `Store` (a trapped instance is dead, and steps must not share
//! state), WASI p2 with no preopens, environment, arguments or sockets (clocks and random
//! stay), and the `canup:step` interfaces, whose every call goes through one capability
//! checkpoint and one audit record. Memory, guest CPU time, wall time and the guest's own
//! output are bounded, and every way a step can stop is mapped to a [`Stop`] an operator can
//! read.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::json;
use thiserror::Error;
use tokio::io::AsyncWrite;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::audit::{AuditLog, Decision};
use crate::backup::Backups;
use crate::cache::CompiledCache;
use crate::capabilities::exec::ExecRequest;
use crate::capabilities::fs::Access;
use crate::capabilities::http::{Endpoints, HttpRequest};
use crate::capabilities::{Denial, Grant, exec as cap_exec, fs as cap_fs, http as cap_http};
use crate::config::StepLimits;
use crate::journal::{ActionResult, PastAction, StepActions};
use crate::manifest::{Edition, Method, Phase, STEP_API};
use crate::repository::ReleaseData;
use crate::sha256_hex;
use crate::sysroot::Sysroot;
use crate::ui::{Level, Ui};

/// The host side of `sdk/wit/step.wit`, generated.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "step",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::canup::step as wit;
use bindings::{Step, StepPre};
use wit::types::{Error as WitError, ErrorKind};

/// How often the epoch advances: the granularity of the CPU limit and of yielding to the
/// runtime (which is what lets the wall-time limit interrupt a spinning guest).
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("step {step}: built for step API {built}, this canup supports {supported}; use a canup of the same major version")]
    ApiMismatch { step: String, built: Version, supported: Version },
    #[error("step {step}: the module is not a valid step component: {why}")]
    Invalid { step: String, why: String },
    #[error("step {step}: the module needs {why}; it was built for another host or a newer step API")]
    Link { step: String, why: String },
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// What a step's run looks like to it: the versions and the install.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub step_id: String,
    pub phase: Phase,
    pub installed: Version,
    pub target: Version,
    pub release: Version,
    /// Unknown (`None`) only while detecting.
    pub edition: Option<Edition>,
    pub method: Option<Method>,
    pub dry_run: bool,
}

/// What a `detect` step reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detected {
    pub installed: Version,
    pub edition: Edition,
    pub method: Method,
}

/// Canopsis writes YY.MM versions with a leading zero (23.04.1), which semver refuses.
pub fn parse_canopsis_version(s: &str) -> Option<Version> {
    let s = s.trim();
    Version::parse(s).ok().or_else(|| {
        let (core, rest) = match s.find(['-', '+']) {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        let parts: Vec<u64> = core.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let [major, minor, patch] = parts[..] else { return None };
        Version::parse(&format!("{major}.{minor}.{patch}{rest}")).ok()
    })
}

/// Everything one step run may use besides its own code.
pub struct StepEnv {
    pub grant: Grant,
    pub sysroot: Sysroot,
    pub endpoints: Arc<Endpoints>,
    pub backups: Backups,
    pub audit: Arc<AuditLog>,
    pub ui: Arc<dyn Ui>,
    pub context: StepContext,
    pub limits: StepLimits,
    /// In a dry run, the commands and file changes the step would have made, in order.
    pub recorded: Arc<Mutex<Vec<String>>>,
    /// The operator's `[settings]`.
    pub settings: Arc<std::collections::BTreeMap<String, String>>,
    /// The data files of the step's release (`context.data`).
    pub data: Arc<ReleaseData>,
    /// Under `canup apply`: the journal of the step's changing actions (see [`StepActions`]).
    pub actions: Option<StepActions>,
}

impl StepEnv {
    /// What every caller (apply, `canup step run`, the tests) needs to give; the rest starts
    /// empty (no endpoints, settings or data, default limits) and is set field by field.
    pub fn new(grant: Grant, sysroot: Sysroot, backups: Backups, audit: Arc<AuditLog>, ui: Arc<dyn Ui>, context: StepContext) -> Self {
        Self {
            grant,
            sysroot,
            endpoints: Arc::default(),
            backups,
            audit,
            ui,
            context,
            limits: StepLimits::default(),
            recorded: Arc::default(),
            settings: Arc::default(),
            data: Arc::default(),
            actions: None,
        }
    }
}

/// Why a step stopped without finishing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Stop {
    #[error("the step returned an error: {0}")]
    Failed(String),
    #[error("the step used more than its CPU time limit of {0:?}")]
    CpuTime(Duration),
    #[error("the step ran past its wall-time limit of {0:?}")]
    WallTime(Duration),
    #[error("the step tried to grow its memory to {wanted} bytes, over its limit of {limit} bytes")]
    OutOfMemory { wanted: usize, limit: usize },
    #[error("the step panicked: {0}")]
    Panic(String),
    #[error("the step trapped: {0}")]
    Trap(String),
}

/// The guest's own stdout or stderr, as kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes written beyond the bound and dropped.
    pub dropped: u64,
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: String,
    /// What a detect step reported.
    pub detected: Option<Detected>,
    pub module_sha256: String,
    pub result: Result<(), Stop>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// A guest output stream that keeps the first `limit` bytes and counts the rest. It never
/// refuses a write: a full pipe would make the guest's `println!` panic (and trap), so that
/// a chatty step would fail for a reason that is not its own. It is a WASI output stream
/// itself (always ready, writes are a memcpy) because the generic async adapter costs a task
/// hand-off per line: 200,000 lines took 17 s through it.
#[derive(Clone)]
struct BoundedPipe {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
}

impl BoundedPipe {
    fn new(limit: usize) -> Self {
        Self { inner: Arc::default(), limit }
    }

    fn take(&self) -> Captured {
        self.inner.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    fn push(&self, buf: &[u8]) {
        if let Ok(mut c) = self.inner.lock() {
            let room = self.limit.saturating_sub(c.bytes.len());
            let keep = buf.len().min(room);
            c.bytes.extend_from_slice(&buf[..keep]);
            c.dropped += (buf.len() - keep) as u64;
        }
    }
}

impl AsyncWrite for BoundedPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Memory bound with a record of the refused size, so the trap can be reported as "out of
/// memory" rather than as the allocator's `unreachable`.
struct MemoryLimiter {
    limit: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!("memory limit of {} bytes reached", self.limit)));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The error the epoch callback raises when the guest's CPU budget is spent.
#[derive(Debug, Error)]
#[error("CPU time limit exceeded")]
struct CpuExceeded;

pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    env: StepEnv,
    cpu: CpuMeter,
    detected: Option<Detected>,
}

/// Guest CPU time, measured from the epoch callback.
///
/// The callback runs once per tick *while guest code runs*. Consecutive callbacks a tick or so
/// apart mean the guest computed the whole time; a long gap means it was suspended in between
/// (a host call such as `yum`, an operator's answer, or a WASI sleep), and only one tick of it
/// is counted. So waiting never counts against the CPU limit, and a spinning guest is charged
/// its real time even when the machine is loaded (ticks up to [`BUSY_GAP`] apart still count).
#[derive(Debug, Default)]
struct CpuMeter {
    used: Duration,
    last: Option<Instant>,
}

/// The longest gap between two callbacks still counted as computing.
const BUSY_GAP: Duration = Duration::from_millis(50);

impl CpuMeter {
    fn tick(&mut self) -> Duration {
        let now = Instant::now();
        let gap = self.last.map_or(EPOCH_TICK, |t| now.duration_since(t));
        self.used += if gap <= BUSY_GAP { gap } else { EPOCH_TICK };
        self.last = Some(now);
        self.used
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn wit_error(kind: ErrorKind, message: impl Into<String>) -> WitError {
    WitError { kind, message: message.into() }
}

impl From<Denial> for WitError {
    fn from(d: Denial) -> Self {
        wit_error(ErrorKind::Denied, d.to_string())
    }
}

fn io_error(e: std::io::Error, what: &str) -> WitError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory => ErrorKind::Invalid,
        _ => ErrorKind::Failed,
    };
    wit_error(kind, format!("{what}: {e}"))
}

impl StepState {
    /// Ends one host call: writes its audit record.
    fn account<T>(&mut self, start: Instant, capability: &str, args: serde_json::Value, result: &Result<T, WitError>, summary: impl FnOnce(&T) -> String) {
        let took = start.elapsed();
        let (decision, text) = match result {
            Ok(v) => (Decision::Allowed, summary(v)),
            Err(e) if e.kind == ErrorKind::Denied => (Decision::Denied, e.message.clone()),
            Err(e) => (Decision::Allowed, format!("error: {}", e.message)),
        };
        self.env.audit.record(self.env.grant.step(), capability, args, decision, text, took);
    }

    /// Looks up a changing action (`key`, none for a query) among those of earlier attempts
    /// of the step: the journal slot it takes, and the earlier result when `replayable`.
    fn memo(&mut self, key: Option<String>, replayable: impl Fn(&ActionResult) -> bool) -> (Option<(String, u32)>, Option<ActionResult>) {
        let (Some(key), Some(actions)) = (key, self.env.actions.as_mut()) else { return (None, None) };
        let (occurrence, past) = actions.next(&key);
        let replay = match past {
            Some(PastAction::Done(r)) if replayable(&r) => Some(r),
            _ => None,
        };
        (Some((key, occurrence)), replay)
    }

    /// What an interrupted canup's attempt at this changing command left in its receipt: the
    /// outcome of a command that finished (journaled, and given to the step as its own), or
    /// nothing when the command must run (it never started, or its outcome is lost). A command
    /// still running is waited for.
    async fn earlier_attempt(&mut self, receipt: &cap_exec::Receipt, req: &ExecRequest) -> Result<Option<cap_exec::ExecOutput>, cap_exec::ExecError> {
        // Only for the messages: the usual case (the command never ran) prints none.
        let words = || shell_words(&req.program, &req.args);
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

    /// Journals the result of a changing action (before the step sees it).
    fn memo_done(&self, slot: &Option<(String, u32)>, result: ActionResult) -> Result<(), WitError> {
        if let (Some((key, occurrence)), Some(actions)) = (slot, self.env.actions.as_ref()) {
            actions.done(key, *occurrence, result).map_err(|e| {
                wit_error(ErrorKind::Failed, format!("{key} was done but the journal could not record it: {e}; check the disk before resuming"))
            })?;
        }
        Ok(())
    }

    fn record(&mut self, line: String) {
        if let Ok(mut r) = self.env.recorded.lock() {
            r.push(line);
        }
    }

    /// A changing `fs` call: performed, or in a dry run checked and recorded as `describe`
    /// says (the step sees success, nothing is written).
    fn fs_change(
        &mut self,
        capability: &str,
        path: &str,
        describe: impl FnOnce(&std::path::Path) -> String,
        op: impl FnOnce(&cap_fs::Resolved, &mut Backups) -> std::io::Result<()>,
        done: String,
    ) -> Result<(), WitError> {
        if self.env.context.dry_run {
            let line = self.fs_call(capability, path, Access::Write, |p, _| Ok(describe(&p.logical)), |_| "recorded (dry run)".into())?;
            self.record(line);
            return Ok(());
        }
        self.fs_call(capability, path, Access::Write, op, |_| done)
    }

    /// One `fs` call: check, then run `op` on the resolved path, then account.
    fn fs_call<T>(
        &mut self,
        capability: &str,
        path: &str,
        access: Access,
        op: impl FnOnce(&cap_fs::Resolved, &mut Backups) -> std::io::Result<T>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, WitError> {
        let start = Instant::now();
        let result = self
            .env
            .grant
            .check_fs(&self.env.sysroot, path, access)
            .map_err(WitError::from)
            .and_then(|resolved| op(&resolved, &mut self.env.backups).map_err(|e| io_error(e, path)));
        self.account(start, capability, json!({ "path": path }), &result, summary);
        result
    }
}

impl wit::types::Host for StepState {}

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
        };
        // Values are left out of the audit: they can hold credentials (CPS_AMQP_URL...).
        let env_names: Vec<&str> = req.env.iter().map(|(k, _)| k.as_str()).collect();
        let args = json!({ "program": req.program, "args": req.args, "env": env_names, "cwd": req.cwd, "user": req.user });
        let dry = self.env.context.dry_run;
        let result = match self.env.grant.check_exec(&req) {
            Err(d) => Err(d.into()),
            Ok(()) if dry && !self.env.grant.exec_is_readonly(&req) => {
                let user = req.user.as_ref().map(|u| format!(" (as {u})")).unwrap_or_default();
                let env = if req.env.is_empty() {
                    String::new()
                } else {
                    format!("{} ", req.env.iter().map(|(k, _)| format!("{k}=…")).collect::<Vec<_>>().join(" "))
                };
                self.record(format!("run: {env}{}{user}", shell_words(&req.program, &req.args)));
                Ok(wit::exec::Output { status: Some(0), stdout: vec![], stderr: vec![], stdout_truncated: false, stderr_truncated: false, simulated: true })
            }
            Ok(()) => {
                if dry {
                    // A read-only query runs for real in a dry run; listing it makes the list the
                    // whole set of commands the real run would run.
                    self.record(format!("query: {}", shell_words(&req.program, &req.args)));
                }
                // A changing command an earlier attempt of this step already ran is not run again.
                let (slot, replay) = self.memo((!dry && !self.env.grant.exec_is_readonly(&req)).then(|| exec_action(&req)), |r| r.status == Some(0));
                if let Some(done) = replay {
                    if let (Some((key, n)), Some(actions)) = (&slot, &self.env.actions) {
                        // Left when a crash came between the journal record and its removal.
                        actions.receipt(key, *n).remove();
                    }
                    let output = wit::exec::Output {
                        status: done.status,
                        stdout: done.stdout.into_bytes(),
                        stderr: done.stderr.into_bytes(),
                        stdout_truncated: false,
                        stderr_truncated: false,
                        simulated: false,
                    };
                    self.env.ui.log(
                        &self.env.context.step_id,
                        Level::Info,
                        &format!("not run again (it ran before the interruption): {}", shell_words(&req.program, &req.args)),
                    );
                    let result = Ok(output);
                    self.account(start, "exec", args, &result, |_| "replayed: ran before the interruption".into());
                    return result;
                }
                let receipt = slot.as_ref().and_then(|(key, n)| self.env.actions.as_ref().map(|a| a.receipt(key, *n)));
                let earlier = match &receipt {
                    Some(r) => self.earlier_attempt(r, &req).await,
                    None => Ok(None),
                };
                let outcome = match earlier {
                    Ok(Some(finished)) => Ok(finished),
                    Ok(None) => cap_exec::run(&req, &self.env.sysroot, &self.env.limits.exec, receipt.as_ref()).await,
                    Err(e) => Err(e),
                };
                let journaled = match &outcome {
                    Ok(o) => Some(ActionResult { status: o.status, stdout: journal_text(&o.stdout), stderr: journal_text(&o.stderr) }),
                    // Journaled as a failure: the next attempt runs the command again and does not
                    // take the receipt of the killed command for the trace of a crash.
                    Err(e @ cap_exec::ExecError::Timeout { .. }) => Some(ActionResult { status: None, stdout: String::new(), stderr: e.to_string() }),
                    Err(_) => None,
                };
                if let Some(result) = journaled {
                    self.memo_done(&slot, result)?;
                    if let Some(r) = &receipt {
                        r.remove();
                    }
                }
                outcome
                    .map(|o| wit::exec::Output {
                        status: o.status,
                        stdout: o.stdout,
                        stderr: o.stderr,
                        stdout_truncated: o.stdout_truncated,
                        stderr_truncated: o.stderr_truncated,
                        simulated: false,
                    })
                    .map_err(|e| {
                        let kind = match &e {
                            cap_exec::ExecError::NotFound { .. } | cap_exec::ExecError::NoCwd(_) | cap_exec::ExecError::NoUser(_) => ErrorKind::NotFound,
                            cap_exec::ExecError::OutsideSysroot { .. } => ErrorKind::Denied,
                            cap_exec::ExecError::Timeout { .. } => ErrorKind::Timeout,
                            _ => ErrorKind::Failed,
                        };
                        wit_error(kind, e.to_string())
                    })
            }
        };
        self.account(start, "exec", args, &result, |o| exit_text(o.status));
        result
    }
}

impl wit::fs::Host for StepState {
    async fn read(&mut self, path: String) -> Result<Vec<u8>, WitError> {
        self.fs_call("fs.read", &path, Access::Read, |p, _| cap_fs::read(p), |d| format!("{} bytes", d.len()))
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), WitError> {
        let text = String::from_utf8_lossy(&data).into_owned();
        let done = format!("{} bytes written", data.len());
        self.fs_change(
            "fs.write",
            &path,
            |p| format!("write {} ({} bytes):\n{}", p.display(), data.len(), indent(&text)),
            |p, b| cap_fs::write(p, &data, b),
            done,
        )
    }

    async fn append(&mut self, path: String, data: Vec<u8>) -> Result<(), WitError> {
        let text = String::from_utf8_lossy(&data).into_owned();
        let done = format!("{} bytes appended", data.len());
        // An append is not idempotent: under apply it is journaled with the file it leaves, so
        // that a crash at any point neither loses nor doubles it when the step runs again.
        let mut actions = if self.env.context.dry_run { None } else { self.env.actions.take() };
        let key = format!("append {path} #{}", &sha256_hex(&data)[..16]);
        let slot = actions.as_mut().map(|a| a.next(&key));
        let outcome = self.fs_change(
            "fs.append",
            &path,
            |p| format!("append to {}:\n{}", p.display(), indent(&text)),
            |p, b| {
                let (Some(actions), Some((occurrence, past))) = (actions.as_ref(), slot.clone()) else { return cap_fs::append(p, &data, b) };
                let current = match std::fs::read(&p.real) {
                    Ok(c) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e),
                };
                match past {
                    Some(PastAction::Done(_)) => return Ok(()),
                    Some(PastAction::Started { expect }) if sha256_hex(&current) == expect => {
                        return actions.done(&key, occurrence, ActionResult::default()).map_err(std::io::Error::other);
                    }
                    _ => {}
                }
                let expect = sha256_hex(&[current.as_slice(), data.as_slice()].concat());
                actions.started(&key, occurrence, expect).map_err(std::io::Error::other)?;
                cap_fs::append(p, &data, b)?;
                actions.done(&key, occurrence, ActionResult::default()).map_err(std::io::Error::other)
            },
            done,
        );
        if actions.is_some() {
            self.env.actions = actions;
        }
        outcome
    }

    async fn exists(&mut self, path: String) -> Result<bool, WitError> {
        self.fs_call("fs.exists", &path, Access::Read, |p, _| Ok(cap_fs::exists(p)), |e| e.to_string())
    }

    async fn list_dir(&mut self, path: String) -> Result<Vec<String>, WitError> {
        self.fs_call("fs.list-dir", &path, Access::Read, |p, _| cap_fs::list(p), |l| format!("{} entries", l.len()))
    }

    async fn remove(&mut self, path: String) -> Result<(), WitError> {
        self.fs_change("fs.remove", &path, |p| format!("remove {}", p.display()), cap_fs::remove, "removed".into())
    }

    async fn metadata(&mut self, path: String) -> Result<wit::fs::FileInfo, WitError> {
        use std::os::unix::fs::MetadataExt;
        use wit::fs::{FileInfo, FileKind};
        self.fs_call(
            "fs.metadata",
            &path,
            Access::Read,
            |p, _| {
                cap_fs::metadata(p).map(|m| FileInfo {
                    kind: if m.is_symlink() {
                        FileKind::Symlink
                    } else if m.is_dir() {
                        FileKind::Directory
                    } else if m.is_file() {
                        FileKind::File
                    } else {
                        FileKind::Other
                    },
                    size: m.len(),
                    mode: m.mode() & 0o7777,
                    modified: m.mtime().max(0) as u64,
                })
            },
            |m| format!("{} bytes", m.size),
        )
    }
}

impl wit::http::Host for StepState {
    async fn send(&mut self, req: wit::http::Request) -> Result<wit::http::Response, WitError> {
        let start = Instant::now();
        let header_names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
        let args = json!({ "endpoint": req.endpoint, "method": req.method, "path": req.path, "headers": header_names,
                           "body_bytes": req.body.as_ref().map(Vec::len) });
        let request = HttpRequest { endpoint: req.endpoint, method: req.method, path: req.path, headers: req.headers, body: req.body };
        let mutating = !matches!(request.method.as_str(), "GET" | "HEAD");
        let result = match self.env.grant.check_http(&request.endpoint, &request.method, &request.path, &request.headers) {
            Err(d) => Err(d.into()),
            Ok(()) if self.env.context.dry_run && mutating => {
                let body = request.body.as_ref().map(|b| format!(" with body {}", String::from_utf8_lossy(b))).unwrap_or_default();
                self.record(format!("send: {} {} to endpoint {}{body}", request.method, request.path, request.endpoint));
                Ok(wit::http::Response { status: 200, headers: vec![("x-canup-dry-run".into(), "1".into())], body: vec![] })
            }
            Ok(()) => {
                if self.env.context.dry_run {
                    // Like a read-only command, a GET runs for real in a dry run and is listed.
                    self.record(format!("query: {} {} on endpoint {}", request.method, request.path, request.endpoint));
                }
                let key = mutating.then(|| {
                    let body = request.body.as_deref().map(sha256_hex).unwrap_or_default();
                    format!("http {} {} on endpoint {} #{}", request.method, request.path, request.endpoint, &body[..body.len().min(16)])
                });
                let (slot, replay) = self.memo(key, |r| r.status.is_some_and(|s| (200..300).contains(&s)));
                if let Some(done) = replay {
                    let result = Ok(wit::http::Response { status: done.status.unwrap_or(200) as u16, headers: vec![], body: done.stdout.into_bytes() });
                    self.account(start, "http", args, &result, |_| "replayed: sent before the interruption".into());
                    return result;
                }
                let outcome = cap_http::send(&self.env.grant, &self.env.endpoints, &request, &self.env.limits.http).await;
                if let Ok(r) = &outcome {
                    self.memo_done(&slot, ActionResult { status: Some(r.status.into()), stdout: journal_text(&r.body), stderr: String::new() })?;
                }
                outcome.map(|r| wit::http::Response { status: r.status, headers: r.headers, body: r.body }).map_err(|e| {
                    let kind = match &e {
                        cap_http::HttpError::Denied(_) => ErrorKind::Denied,
                        cap_http::HttpError::UnknownEndpoint(_) => ErrorKind::NotFound,
                        cap_http::HttpError::TooLarge { .. } => ErrorKind::TooLarge,
                        cap_http::HttpError::Timeout { .. } => ErrorKind::Timeout,
                        _ => ErrorKind::Failed,
                    };
                    wit_error(kind, e.to_string())
                })
            }
        };
        self.account(start, "http", args, &result, |r| format!("status {}", r.status));
        result
    }
}

impl wit::ui::Host for StepState {
    async fn log(&mut self, level: wit::ui::Level, message: String) {
        use wit::ui::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        self.env.ui.log(&self.env.context.step_id, level, &message);
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: String) {
        self.env.ui.progress(&self.env.context.step_id, done, total, &message);
    }

    async fn confirm(&mut self, question: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        let q = question.clone();
        // The operator may take minutes to answer; keep the runtime free meanwhile.
        let answer = tokio::task::spawn_blocking(move || ui.confirm(&step, &q)).await.unwrap_or(false);
        self.account(start, "ui.confirm", json!({ "question": question }), &Ok::<_, WitError>(answer), |a| a.to_string());
        answer
    }

    async fn manual(&mut self, instruction: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        let text = instruction.clone();
        let done = tokio::task::spawn_blocking(move || ui.manual(&step, &text)).await.unwrap_or(false);
        self.account(
            start,
            "ui.manual",
            json!({ "instruction": instruction }),
            &Ok::<_, WitError>(done),
            |d| {
                if *d { "done".into() } else { "not done".into() }
            },
        );
        done
    }
}

impl wit::context::Host for StepState {
    async fn get(&mut self) -> wit::context::Info {
        let c = &self.env.context;
        wit::context::Info {
            installed: c.installed.to_string(),
            target: c.target.to_string(),
            release: c.release.to_string(),
            edition: c.edition.map(|e| e.to_string()).unwrap_or_default(),
            method: c.method.map(|m| m.to_string()).unwrap_or_default(),
            phase: c.phase.to_string(),
            dry_run: c.dry_run,
            step_id: c.step_id.clone(),
        }
    }

    async fn setting(&mut self, name: String) -> Option<String> {
        self.env.settings.get(&name).cloned()
    }

    async fn data_files(&mut self) -> Vec<String> {
        self.env.data.keys().cloned().collect()
    }

    async fn data(&mut self, name: String) -> Result<Vec<u8>, WitError> {
        self.env.data.get(&name).cloned().ok_or_else(|| {
            let have = self.env.data.keys().cloned().collect::<Vec<_>>().join(", ");
            wit_error(
                ErrorKind::NotFound,
                format!("release {} ships no data file {name:?} (it has: {})", self.env.context.release, if have.is_empty() { "none" } else { &have }),
            )
        })
    }
}

impl wit::detect::Host for StepState {
    async fn report(&mut self, installed: String, edition: String, method: String) -> Result<(), WitError> {
        let start = Instant::now();
        let result = (|| {
            if self.env.context.phase != Phase::Detect {
                return Err(wit_error(
                    ErrorKind::Denied,
                    format!("step {} runs in phase {}; only detect steps report the installation", self.env.context.step_id, self.env.context.phase),
                ));
            }
            let installed = parse_canopsis_version(&installed).ok_or_else(|| wit_error(ErrorKind::Invalid, format!("{installed:?} is not a version")))?;
            let edition: Edition = serde_json::from_value(serde_json::Value::String(edition.clone()))
                .map_err(|_| wit_error(ErrorKind::Invalid, format!("edition {edition:?} is neither core nor cat")))?;
            let method: Method = serde_json::from_value(serde_json::Value::String(method.clone()))
                .map_err(|_| wit_error(ErrorKind::Invalid, format!("method {method:?} is neither packages nor compose")))?;
            Ok(Detected { installed, edition, method })
        })();
        let args = json!({ "installed": installed, "edition": edition, "method": method });
        let outcome = result.map(|d| self.detected = Some(d));
        self.account(start, "detect.report", args, &outcome, |_| "recorded".into());
        outcome
    }
}

/// How instances get their memory. canup uses the default, on-demand allocation: a step is
/// instantiated once per upgrade (about fifteen instantiations in all), and `cargo xtask
/// bench` measured what the pooling allocator would save on them (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    OnDemand,
    /// Slots reserved up front, each with room for `max_memory` bytes of linear memory.
    Pooling {
        max_memory: usize,
    },
}

/// A verified, compiled module ready to instantiate.
#[derive(Clone)]
pub struct LoadedStep {
    pre: StepPre<StepState>,
    pub module_sha256: String,
    /// The step API the module imports (its declared one when it imports no `canup:step`
    /// interface).
    pub api: Version,
    pub from_cache: bool,
}

pub struct Sandbox {
    engine: Engine,
    linker: Linker<StepState>,
    cache: Option<CompiledCache>,
}

impl Sandbox {
    /// An engine with epoch interruption, the WASI p2 imports and the step interfaces, and
    /// a compiled-component cache in `cache_dir` when given.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self, SandboxError> {
        Self::with_allocation(cache_dir, Allocation::OnDemand)
    }

    pub fn with_allocation(cache_dir: Option<&Path>, allocation: Allocation) -> Result<Self, SandboxError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if let Allocation::Pooling { max_memory } = allocation {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(8).total_core_instances(64).total_memories(32).total_tables(64).max_memory_size(max_memory);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;
        Step::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("canup-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let cache = cache_dir.map(|d| CompiledCache::open(d, &engine)).transpose()?;
        Ok(Self { engine, linker, cache })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) and links a module. A module built for another
    /// major step API is refused here, before anything of it runs.
    pub fn load(&self, step: &str, wasm: &[u8], declared_api: &Version) -> Result<LoadedStep, SandboxError> {
        let mismatch = |built: &Version| SandboxError::ApiMismatch { step: step.to_owned(), built: built.clone(), supported: STEP_API };
        if declared_api.major != STEP_API.major {
            return Err(mismatch(declared_api));
        }
        let sha = sha256_hex(wasm);
        let cached = match &self.cache {
            Some(c) => c.load(&self.engine, &sha)?,
            None => None,
        };
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, wasm).map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("{e:#}") })?;
                if let Some(cache) = &self.cache
                    && let Err(e) = cache.store(&sha, &c)
                {
                    tracing::warn!("{e}; continuing without caching");
                }
                c
            }
        };
        let mut api = declared_api.clone();
        for (name, _) in component.component_type().imports(&self.engine) {
            if let Some(version) = name.strip_prefix("canup:step/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v) {
                let v = Version::parse(version).map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("import {name}: {e}") })?;
                if v.major != STEP_API.major {
                    return Err(mismatch(&v));
                }
                api = v;
            }
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| SandboxError::Link { step: step.to_owned(), why: format!("{e:#}") })?;
        let pre = StepPre::new(pre).map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("{e:#}") })?;
        Ok(LoadedStep { pre, module_sha256: sha, api, from_cache })
    }

    /// Runs a loaded step in a fresh store. Never panics on guest behaviour: every way the
    /// guest can stop is in the report.
    pub async fn run(&self, step: &LoadedStep, env: StepEnv) -> StepReport {
        let limits = env.limits;
        let step_id = env.context.step_id.clone();
        let stdout = BoundedPipe::new(limits.guest_output);
        let stderr = BoundedPipe::new(limits.guest_output);
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
        let started = Instant::now();
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { limit: limits.memory, refused: None },
            env,
            cpu: CpuMeter::default(),
            detected: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            if s.cpu.tick() > s.env.limits.cpu {
                return Err(CpuExceeded.into());
            }
            // Yielding lets the runtime run the wall-time timer even while the guest spins.
            Ok(UpdateDeadline::Yield(1))
        });

        let outcome = tokio::time::timeout(limits.wall, async {
            let instance = step.pre.instantiate_async(&mut store).await?;
            tracing::trace!("instantiated");
            instance.call_run(&mut store).await
        })
        .await;
        let stderr_text = stderr.take();
        let result = match outcome {
            Err(_) => Err(Stop::WallTime(limits.wall)),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(Stop::Failed(message)),
            Ok(Err(e)) => Err(classify_trap(&e, store.data().limiter.refused, &limits, &stderr_text)),
        };
        let detected = store.data_mut().detected.take();
        StepReport {
            step: step_id,
            detected,
            module_sha256: step.module_sha256.clone(),
            result,
            stdout: stdout.take(),
            stderr: stderr_text,
            duration: started.elapsed(),
        }
    }
}

/// How the journal names a changing command: readable, and exact through the digest of
/// everything that makes it this command (environment values, input, user, directory).
fn exec_action(req: &ExecRequest) -> String {
    let identity =
        json!({ "program": req.program, "args": req.args, "env": req.env, "cwd": req.cwd, "user": req.user, "stdin": req.stdin.as_deref().map(sha256_hex) });
    format!("exec {} #{}", shell_words(&req.program, &req.args), &sha256_hex(identity.to_string().as_bytes())[..16])
}

fn exit_text(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    }
}

/// Output kept in the journal for a replay: the start of it, as text.
fn journal_text(bytes: &[u8]) -> String {
    const KEEP: usize = 4096;
    String::from_utf8_lossy(&bytes[..bytes.len().min(KEEP)]).into_owned()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// A command as a shell would need it typed, for dry-run output an operator can replay, with
/// URL passwords masked (see [`crate::audit::redact`]): every listing, log line and journal
/// action name of a command goes through here.
pub fn shell_words(program: &str, args: &[String]) -> String {
    let words = shell_words_raw(program, args);
    crate::audit::redact(&words).into_owned()
}

fn shell_words_raw(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn classify_trap(e: &wasmtime::Error, refused: Option<usize>, limits: &StepLimits, stderr: &Captured) -> Stop {
    if e.downcast_ref::<CpuExceeded>().is_some() {
        return Stop::CpuTime(limits.cpu);
    }
    if let Some(wanted) = refused {
        return Stop::OutOfMemory { wanted, limit: limits.memory };
    }
    // A Rust guest prints "panicked at FILE:LINE:COL:\nMESSAGE" on stderr, then aborts.
    let text = stderr.text();
    if let Some(pos) = text.rfind("panicked at ") {
        let after = &text[pos + "panicked at ".len()..];
        let (location, message) = after.split_once(":\n").unwrap_or((after, ""));
        let message = message.lines().take_while(|l| !l.starts_with("note:")).collect::<Vec<_>>().join("\n");
        return Stop::Panic(format!("{} (at {})", message.trim(), location.trim()));
    }
    Stop::Trap(format!("{e:#}"))
}
