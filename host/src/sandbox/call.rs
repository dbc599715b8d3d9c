//! The state of one step run as the host functions see it, and what every host call shares:
//! its audit record, the dry-run listing, and for a changing call (a command that is not a
//! read-only query, an HTTP request other than GET/HEAD) the journal that makes it happen
//! once across a crash.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{ErrorKind, WitError, wit_error};
use super::limits::{CpuMeter, MemoryLimiter};
use super::{Detected, StepEnv};
use crate::audit::Decision;
use crate::journal::{ActionResult, PastAction};

/// The store's data: WASI's context, the limits' meters, and what the step may use.
pub struct StepState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) env: StepEnv,
    pub(super) cpu: CpuMeter,
    pub(super) detected: Option<Detected>,
    /// Why the step says it did not do its work (`ui.skip`).
    pub(super) skipped: Option<String>,
    /// Bytes of text the step has shown the operator so far (see `StepLimits::ui_text`).
    pub(super) ui_used: usize,
}

/// A changing call's kind: the one place that says when an earlier attempt's result counts
/// as done, so that a resumed step is given that result instead of acting again.
#[derive(Debug, Clone, Copy)]
pub(super) enum Effect {
    /// A command that is not a read-only query: done when it exited 0.
    Command,
    /// An HTTP request other than GET/HEAD: done when answered 2xx.
    Request,
}

impl Effect {
    /// Anything but success is tried again on resume: the step decides what a failure means,
    /// and it must see a real one, not a replay of the failure before the crash.
    fn done(self, r: &ActionResult) -> bool {
        match self {
            Effect::Command => r.status == Some(0),
            Effect::Request => r.status.is_some_and(|s| (200..300).contains(&s)),
        }
    }
}

/// How an allowed command or request ended for the step.
pub(super) enum Done<T> {
    /// It ran now (or was listed, in a dry run).
    Now(T),
    /// An earlier attempt of the step got it done: its journaled result.
    Replayed(T),
}

/// Where a changing action sits in the step's journal: its name and its occurrence (the N-th
/// identical action of the step).
pub(super) type Slot = Option<(String, u32)>;

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StepState {
    /// Ends one host call: writes its audit record.
    pub(super) fn account<T>(
        &mut self,
        start: Instant,
        capability: &str,
        args: serde_json::Value,
        result: &Result<T, WitError>,
        summary: impl FnOnce(&T) -> String,
    ) {
        let took = start.elapsed();
        let (decision, text) = match result {
            Ok(v) => (Decision::Allowed, summary(v)),
            Err(e) if e.kind == ErrorKind::Denied => (Decision::Denied, e.message.clone()),
            Err(e) => (Decision::Allowed, format!("error: {}", e.message)),
        };
        self.env.audit.record(self.env.grant.step(), capability, args, decision, text, took);
    }

    /// Looks up a changing action (`key`; none for a query) among those of earlier attempts
    /// of the step under apply: the journal slot it takes, and the earlier result when that
    /// attempt got it done (see [`Effect`]).
    pub(super) fn journaled(&mut self, effect: Effect, key: Option<String>) -> (Slot, Option<ActionResult>) {
        let (Some(key), Some(actions)) = (key, self.env.actions.as_mut()) else { return (None, None) };
        let (occurrence, past) = actions.next(&key);
        let replay = match past {
            Some(PastAction::Done(r)) if effect.done(&r) => Some(r),
            _ => None,
        };
        (Some((key, occurrence)), replay)
    }

    /// Ends a changing-capable call: audited as a replay when an earlier attempt's result is
    /// given back (`why` says when it happened), as itself otherwise.
    pub(super) fn conclude<T>(
        &mut self,
        start: Instant,
        capability: &str,
        args: serde_json::Value,
        result: Result<Done<T>, WitError>,
        why: &str,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, WitError> {
        match result {
            Ok(Done::Replayed(value)) => {
                let result = Ok(value);
                self.account(start, capability, args, &result, |_| format!("replayed: {why}"));
                result
            }
            other => {
                let result = other.map(|d| match d {
                    Done::Now(v) | Done::Replayed(v) => v,
                });
                self.account(start, capability, args, &result, summary);
                result
            }
        }
    }

    /// Journals the result of a changing action (before the step sees it).
    pub(super) fn journal_done(&self, slot: &Slot, result: ActionResult) -> Result<(), WitError> {
        if let (Some((key, occurrence)), Some(actions)) = (slot, self.env.actions.as_ref()) {
            actions.done(key, *occurrence, result).map_err(|e| {
                wit_error(ErrorKind::Failed, format!("{key} was done but the journal could not record it: {e}; check the disk before resuming"))
            })?;
        }
        Ok(())
    }

    /// Adds a line to the dry run's listing of what the real run would do. The listing is
    /// text the step controls: each line is bounded, and all of them count against the step's
    /// `ui_text` budget. Past it the call fails, since a listing cut short would no longer be
    /// what the real run does (a step that looped a command with a 20 MB argument once made
    /// a dry run print 320 MB and hold 1.1 GB).
    pub(super) fn record(&mut self, line: String) -> Result<(), WitError> {
        let line = crate::ui::cut(&line, LISTING_LINE_BYTES).into_owned();
        if self.ui_used + line.len() > self.env.limits.ui_text {
            return Err(wit_error(
                ErrorKind::Invalid,
                format!(
                    "step {} lists more than {} bytes of changes in the dry run (ui_text_kib in canup.toml): its listing would no longer be what the real run does",
                    self.env.context.step_id, self.env.limits.ui_text
                ),
            ));
        }
        self.ui_used += line.len();
        self.env.recorded.record(line);
        Ok(())
    }
}

/// The most of one dry-run listing line (a file's whole new content is one line).
const LISTING_LINE_BYTES: usize = 64 << 10;

/// The most of one argument shown in a listing or a log line (the audit bounds its own).
const ARG_SHOWN_BYTES: usize = 1024;

pub(super) fn exit_text(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    }
}

/// Output kept in the journal for a replay: the start of it, as text.
pub(super) fn journal_text(bytes: &[u8]) -> String {
    const KEEP: usize = 4096;
    String::from_utf8_lossy(&bytes[..bytes.len().min(KEEP)]).into_owned()
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
        .map(|a| crate::ui::cut(a, ARG_SHOWN_BYTES))
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
