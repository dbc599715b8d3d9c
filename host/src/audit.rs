//! The audit log: every capability decision, allowed or denied, as one JSON line.
//!
//! Lines are appended with a single `write` on an `O_APPEND` file, so concurrent writers never
//! interleave within a line and a crash loses at most the line being written. The log is not
//! fsynced per line: it is a record for people, while the journal (which must survive crashes
//! exactly) is synced.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Denied,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub time: String,
    pub run: String,
    pub step: String,
    /// `exec`, `fs.read`, `fs.write`, `http`, ...
    pub capability: String,
    pub args: serde_json::Value,
    pub decision: Decision,
    /// Why it was denied, or how the allowed call ended (`ok`, `exit 0`, an error).
    pub result: String,
    pub duration_us: u64,
}

#[derive(Debug)]
pub struct AuditLog {
    run: String,
    file: Option<Mutex<fs::File>>,
    /// The first [`KEPT`] records, for the summary of `canup step run` and the tests: the log
    /// itself is the file, and a step making millions of calls must not make canup hold them.
    records: Mutex<Vec<AuditRecord>>,
}

/// Records kept in memory per process.
pub const KEPT: usize = 1000;

/// The longest string of a record's arguments kept whole, and the most items of a list: a
/// step chooses its arguments, and one record must not cost the disk or the reader what the
/// step's memory limit allows (the rest is replaced by a count).
const ARG_TEXT: usize = 4096;
const ARG_ITEMS: usize = 64;

impl AuditLog {
    /// An audit log appended to `path` (created 0600: arguments can be sensitive).
    pub fn open(path: &Path, run: &str) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Self { run: run.to_owned(), file: Some(Mutex::new(file)), records: Mutex::default() })
    }

    /// An audit kept in memory only (tests, `step run` without a state directory).
    pub fn in_memory(run: &str) -> Self {
        Self { run: run.to_owned(), file: None, records: Mutex::default() }
    }

    pub fn record(&self, step: &str, capability: &str, mut args: serde_json::Value, decision: Decision, result: String, duration: Duration) {
        redact_json(&mut args);
        bound_json(&mut args);
        let mut result = redact(&result).into_owned();
        bound_text(&mut result);
        let rec = AuditRecord {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            run: self.run.clone(),
            step: step.to_owned(),
            capability: capability.to_owned(),
            args,
            decision,
            result,
            duration_us: duration.as_micros().try_into().unwrap_or(u64::MAX),
        };
        if let Some(file) = &self.file
            && let Ok(mut line) = serde_json::to_vec(&rec)
        {
            line.push(b'\n');
            if let Ok(mut f) = file.lock()
                && let Err(e) = f.write_all(&line)
            {
                tracing::error!("cannot append to the audit log: {e}");
            }
        }
        if let Ok(mut records) = self.records.lock()
            && records.len() < KEPT
        {
            records.push(rec);
        }
    }

    /// The first [`KEPT`] records of this process, in order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Masks the password of every URL with credentials in `text`
/// (`mongodb://cpsmongo:secret@localhost/canopsis` → `mongodb://cpsmongo:***@localhost/canopsis`).
///
/// Steps pass such URLs as arguments (the 4.5 releases' `mongo CPS_MONGO_URL`), and canup
/// writes commands into files that outlive the run and get copied into tickets: the audit log,
/// the journal's action names, dry-run listings. The password adds nothing there; the user
/// and host still say which database was meant.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"') || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
                changed = true;
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    if !changed {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Cuts a string longer than [`ARG_TEXT`] bytes (at a character boundary) and says how much
/// was left out.
fn bound_text(text: &mut String) {
    if text.len() > ARG_TEXT {
        let cut = (0..=ARG_TEXT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let more = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("… ({more} more bytes)"));
    }
}

fn bound_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => bound_text(s),
        serde_json::Value::Array(items) => {
            if items.len() > ARG_ITEMS {
                let more = items.len() - ARG_ITEMS;
                items.truncate(ARG_ITEMS);
                items.push(serde_json::Value::String(format!("… ({more} more items)")));
            }
            items.iter_mut().for_each(bound_json);
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(bound_json),
        _ => {}
    }
}

fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_the_rest_is_kept() {
        assert_eq!(redact("mongo mongodb://cpsmongo:canopsis@localhost/canopsis"), "mongo mongodb://cpsmongo:***@localhost/canopsis");
        assert_eq!(
            redact("amqp://cpsrabbit:p%40ss@rabbitmq:5672/canopsis and 'http://u:p@h'"),
            "amqp://cpsrabbit:***@rabbitmq:5672/canopsis and 'http://u:***@h'"
        );
        for kept in ["http://localhost:8082/api", "mongodb://cpsmongo@localhost", "no url at all", "://", "a://b:c", "x://@", ""] {
            assert!(matches!(redact(kept), std::borrow::Cow::Borrowed(_)), "{kept}");
        }
    }

    /// A step picks its arguments: 200 arguments of 1 MB make a record of at most
    /// 64 strings of 4 KiB, and the memory keeps [`KEPT`] records however many calls come.
    #[test]
    fn records_are_bounded_and_so_is_what_memory_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl"), "r1").unwrap();
        let huge = "é".repeat(500_000);
        let args = serde_json::json!({ "program": "/usr/bin/rpm", "args": vec![huge.clone(); 200] });
        log.record("s", "exec", args, Decision::Denied, huge.clone(), Duration::ZERO);
        let text = fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert!(text.len() < 64 * 4200 + 8000, "{} bytes for one record", text.len());
        let rec: AuditRecord = serde_json::from_str(text.trim()).unwrap();
        let kept = rec.args["args"].as_array().unwrap();
        assert_eq!(kept.len(), ARG_ITEMS + 1);
        assert_eq!(kept[ARG_ITEMS], "… (136 more items)");
        assert!(kept[0].as_str().unwrap().ends_with("… (995904 more bytes)"), "{}", &kept[0].as_str().unwrap()[4000..]);
        assert!(rec.result.len() < ARG_TEXT + 100);
        for _ in 0..KEPT + 10 {
            log.record("s", "fs.read", serde_json::json!({ "path": "/x" }), Decision::Allowed, "ok".into(), Duration::ZERO);
        }
        assert_eq!(log.records().len(), KEPT);
        assert_eq!(fs::read_to_string(dir.path().join("audit.jsonl")).unwrap().lines().count(), KEPT + 11, "the file has them all");
    }

    #[test]
    fn the_audit_log_never_holds_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.jsonl"), "r1").unwrap();
        let args = serde_json::json!({ "program": "/usr/bin/mongo", "args": ["mongodb://cpsmongo:canopsis@localhost/canopsis"] });
        log.record(
            "4.5.5/mongodb-migrations",
            "exec",
            args,
            Decision::Allowed,
            "error: cannot reach mongodb://cpsmongo:canopsis@localhost".into(),
            Duration::ZERO,
        );
        let text = fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert!(!text.contains("canopsis@"), "{text}");
        assert!(text.contains("mongodb://cpsmongo:***@localhost/canopsis"), "{text}");
    }
}
