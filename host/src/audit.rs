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
    records: Mutex<Vec<AuditRecord>>,
}

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

    pub fn record(&self, step: &str, capability: &str, args: serde_json::Value, decision: Decision, result: String, duration: Duration) {
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
        if let Ok(mut records) = self.records.lock() {
            records.push(rec);
        }
    }

    /// The records of this process, in order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
