//! `canup:step/fs`: reads and changes under the step's fs rules; in a dry run a change is
//! checked and listed, not made; an append is journaled so that a resumed step neither loses
//! nor doubles it.
//!
//! A call runs on the runtime's thread, synchronously: moving each call to tokio's blocking
//! pool made the 4 KB read 53 µs instead of the 20 µs goal (`cargo xtask bench`, tried and
//! taken back out), and nothing a call opens can block for long (files are opened
//! `O_NONBLOCK` and checked regular before any read, directories `O_DIRECTORY`). A call that
//! blocks all the same (a hung network filesystem) holds only the step's own task: the
//! wall-time timer runs in another (`Sandbox::run`). The call's time counts against the step's
//! CPU budget: it is work canup does for the step.

use std::io;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::super::bindings::{WitError, io_error, wit};
use super::super::call::StepState;
use crate::backup::Backups;
use crate::capabilities::content;
use crate::capabilities::fs::{self as cap_fs, Access};
use crate::journal::{ActionResult, PastAction};
use crate::sandbox::Staged;
use crate::sha256_hex;

impl wit::fs::Host for StepState {
    async fn read(&mut self, path: String) -> Result<Vec<u8>, WitError> {
        let max = self.env.limits.fs_read;
        let staged = self.staged_view();
        self.fs_call(
            "fs.read",
            &path,
            Access::Read,
            move |p, _| match staged(p) {
                Some(Staged::File(data)) => Ok(data),
                Some(Staged::Removed) => Err(io::ErrorKind::NotFound.into()),
                Some(Staged::Dir) => Err(io::ErrorKind::IsADirectory.into()),
                None => cap_fs::read(p, max),
            },
            |d| format!("{} bytes", d.len()),
        )
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), WitError> {
        let text = String::from_utf8_lossy(&data).into_owned();
        let done = format!("{} bytes written", data.len());
        let max = self.env.limits.fs_read;
        let size = data.len();
        self.fs_change(
            "fs.write",
            &path,
            Access::Write,
            Staging::Write(data.clone()),
            move |p| format!("write {} ({size} bytes):\n{}", p.display(), indent(&text)),
            move |p, b| cap_fs::write(p, &data, max, b),
            done,
        )
    }

    async fn append(&mut self, path: String, data: Vec<u8>) -> Result<(), WitError> {
        let text = String::from_utf8_lossy(&data).into_owned();
        let done = format!("{} bytes appended", data.len());
        // An append is not idempotent: under apply it is journaled with the file it leaves, so
        // that a crash at any point neither loses nor doubles it when the step runs again.
        let key = format!("append {path} #{}", &sha256_hex(&data)[..16]);
        let journal = match self.env.actions.as_mut() {
            Some(actions) if !self.env.context.dry_run => Some((actions.recorder(), actions.next(&key))),
            _ => None,
        };
        let max = self.env.limits.fs_read;
        self.fs_change(
            "fs.append",
            &path,
            Access::Write,
            Staging::Append(data.clone()),
            move |p| format!("append to {}:\n{}", p.display(), indent(&text)),
            move |p, b| {
                let Some((recorder, (occurrence, past))) = journal else { return cap_fs::append(p, &data, max, b) };
                let current = match cap_fs::read(p, max) {
                    Ok(c) => c,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e),
                };
                match past {
                    Some(PastAction::Done(_)) => return Ok(()),
                    Some(PastAction::Started { expect }) if sha256_hex(&current) == expect => {
                        return recorder.done(&key, occurrence, ActionResult::default()).map_err(io::Error::other);
                    }
                    _ => {}
                }
                let expect = sha256_hex(&[current.as_slice(), data.as_slice()].concat());
                recorder.started(&key, occurrence, expect).map_err(io::Error::other)?;
                cap_fs::append(p, &data, max, b)?;
                recorder.done(&key, occurrence, ActionResult::default()).map_err(io::Error::other)
            },
            done,
        )
    }

    async fn exists(&mut self, path: String) -> Result<bool, WitError> {
        let staged = self.staged_view();
        self.fs_call(
            "fs.exists",
            &path,
            Access::Read,
            move |p, _| match staged(p) {
                Some(state) => Ok(state != Staged::Removed),
                None => cap_fs::exists(p),
            },
            |e| e.to_string(),
        )
    }

    async fn list_dir(&mut self, path: String) -> Result<Vec<String>, WitError> {
        let dry = self.env.context.dry_run.then(|| self.env.recorded.clone());
        self.fs_call(
            "fs.list-dir",
            &path,
            Access::Read,
            move |p, _| {
                let Some(dry) = dry else { return cap_fs::list(p) };
                let names = match dry.staged(&p.logical) {
                    Some(Staged::Dir) => Vec::new(),
                    Some(_) => return Err(io::ErrorKind::NotADirectory.into()),
                    None => cap_fs::list(p)?,
                };
                Ok(dry.listing(&p.logical, names))
            },
            |l| format!("{} entries", l.len()),
        )
    }

    async fn remove(&mut self, path: String) -> Result<(), WitError> {
        let max = self.env.limits.fs_read;
        self.fs_change(
            "fs.remove",
            &path,
            Access::Write,
            Staging::Remove,
            |p| format!("remove {}", p.display()),
            move |p, b| cap_fs::remove(p, max, b),
            "removed".into(),
        )
    }

    async fn create_dir(&mut self, path: String, mode: Option<u32>) -> Result<(), WitError> {
        let mode = mode.unwrap_or(0o755) & 0o777;
        let missing = cap_fs::missing_dirs(&self.env.sysroot, &path).map_err(WitError::from);
        let missing = match missing {
            // A directory an earlier call of this dry run listed is there for what follows.
            Ok(m) if self.env.context.dry_run => m.into_iter().filter(|d| self.env.recorded.staged(Path::new(d)) != Some(Staged::Dir)).collect(),
            Ok(m) => m,
            Err(e) => {
                self.account(Instant::now(), "fs.create-dir", json!({ "path": path }), &Err::<(), _>(e.clone()), |_| String::new());
                return Err(e);
            }
        };
        if missing.is_empty() {
            // Already there: one checked, audited call that changes nothing.
            let staged = self.staged_view();
            let exists = move |p: &cap_fs::Resolved, b: &mut Backups| if staged(p) == Some(Staged::Dir) { Ok(false) } else { cap_fs::create_dir(p, mode, b) };
            return self.fs_call("fs.create-dir", &path, Access::CreateDir, exists, |_| "exists".into()).map(|_| ());
        }
        // `mkdir -p`: each directory made is a change of its own, checked, audited, listed.
        for dir in missing {
            self.fs_change(
                "fs.create-dir",
                &dir,
                Access::CreateDir,
                Staging::Dir,
                move |p| format!("create directory {} (mode {mode:04o})", p.display()),
                move |p, b| cap_fs::create_dir(p, mode, b).map(|_| ()),
                format!("created (mode {mode:04o})"),
            )?;
        }
        Ok(())
    }

    async fn metadata(&mut self, path: String) -> Result<wit::fs::FileInfo, WitError> {
        use nix::sys::stat::SFlag;
        use wit::fs::{FileInfo, FileKind};
        let staged = self.staged_view();
        self.fs_call(
            "fs.metadata",
            &path,
            Access::Read,
            move |p, _| {
                let staged_info = |kind, size: usize, mode| FileInfo {
                    kind,
                    size: size as u64,
                    mode,
                    modified: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                };
                match staged(p) {
                    Some(Staged::File(data)) => return Ok(staged_info(FileKind::File, data.len(), 0o644)),
                    Some(Staged::Dir) => return Ok(staged_info(FileKind::Directory, 0, 0o755)),
                    Some(Staged::Removed) => return Err(io::ErrorKind::NotFound.into()),
                    None => {}
                }
                cap_fs::metadata(p).map(|st| FileInfo {
                    kind: match cap_fs::kind(&st) {
                        SFlag::S_IFLNK => FileKind::Symlink,
                        SFlag::S_IFDIR => FileKind::Directory,
                        SFlag::S_IFREG => FileKind::File,
                        _ => FileKind::Other,
                    },
                    size: st.st_size.max(0) as u64,
                    mode: st.st_mode & 0o7777,
                    modified: st.st_mtime.max(0) as u64,
                })
            },
            |m| format!("{} bytes", m.size),
        )
    }
}

impl StepState {
    /// A changing `fs` call: performed, or in a dry run checked and recorded as `describe`
    /// says (the step sees success, nothing is written).
    #[allow(clippy::too_many_arguments)]
    fn fs_change(
        &mut self,
        capability: &str,
        path: &str,
        access: Access,
        staging: Staging,
        describe: impl FnOnce(&Path) -> String,
        op: impl FnOnce(&cap_fs::Resolved, &mut Backups) -> io::Result<()>,
        done: String,
    ) -> Result<(), WitError> {
        let content = self.content_check(&staging);
        if self.env.context.dry_run {
            let dry = self.env.recorded.clone();
            let max = self.env.limits.fs_read;
            let line = self.fs_call_checked(
                capability,
                path,
                access,
                content,
                move |p, _| {
                    let state = match staging {
                        Staging::Write(data) => Staged::File(data),
                        Staging::Append(data) => {
                            let mut content = match dry.staged(&p.logical) {
                                Some(Staged::File(content)) => content,
                                Some(_) => Vec::new(),
                                None => match cap_fs::read(p, max) {
                                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                                    other => other?,
                                },
                            };
                            content.extend_from_slice(&data);
                            Staged::File(content)
                        }
                        Staging::Remove => Staged::Removed,
                        Staging::Dir => Staged::Dir,
                    };
                    dry.stage(&p.logical, state);
                    Ok(describe(&p.logical))
                },
                |_| "recorded (dry run)".into(),
            )?;
            self.record(line)?;
            return Ok(());
        }
        self.fs_call_checked(capability, path, access, content, op, |_| done)
    }

    /// What a change must pass besides the path rules: for a file whose content root runs (a
    /// systemd unit or drop-in, a Compose file, the project's `.env`), the content rules
    /// ([`crate::capabilities::content`]), judged on the file as it is now (or as this dry run
    /// left it) and as the change leaves it.
    fn content_check(&self, staging: &Staging) -> impl FnOnce(&cap_fs::Resolved) -> Result<(), WitError> + use<> {
        let grant = self.env.grant.clone();
        let project =
            HostProject { sysroot: self.env.sysroot.clone(), dry: self.env.context.dry_run.then(|| self.env.recorded.clone()), max: self.env.limits.fs_read };
        let change = match staging {
            Staging::Write(d) => Some((false, Some(d.clone()))),
            Staging::Append(d) => Some((true, Some(d.clone()))),
            Staging::Remove => Some((false, None)),
            Staging::Dir => None,
        };
        move |p| {
            let Some((append, data)) = change.filter(|_| content::is_ruled(&p.logical)) else { return Ok(()) };
            let old = content::Project::read(&project, &p.logical);
            let new = match (append, data) {
                (true, Some(d)) => Some([old.clone().unwrap_or_default(), d].concat()),
                (_, d) => d,
            };
            grant.check_content(&p.logical, old.as_deref(), new.as_deref(), &project).map_err(WitError::from)
        }
    }

    /// In a dry run, how the changes it listed so far leave a path (see [`crate::sandbox::DryRun`]); always
    /// `None` in a real run.
    fn staged_view(&self) -> impl FnOnce(&cap_fs::Resolved) -> Option<Staged> + use<> {
        let dry = self.env.context.dry_run.then(|| self.env.recorded.clone());
        move |p| dry.and_then(|d| d.staged(&p.logical))
    }

    /// One `fs` call: check, then run `op` on the resolved path; then account.
    fn fs_call<T>(
        &mut self,
        capability: &str,
        path: &str,
        access: Access,
        op: impl FnOnce(&cap_fs::Resolved, &mut Backups) -> io::Result<T>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, WitError> {
        self.fs_call_checked(capability, path, access, |_| Ok(()), op, summary)
    }

    /// [`Self::fs_call`] with a further check of the resolved path before `op`.
    fn fs_call_checked<T>(
        &mut self,
        capability: &str,
        path: &str,
        access: Access,
        check: impl FnOnce(&cap_fs::Resolved) -> Result<(), WitError>,
        op: impl FnOnce(&cap_fs::Resolved, &mut Backups) -> io::Result<T>,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, WitError> {
        let start = Instant::now();
        let result = self
            .env
            .grant
            .check_fs(&self.env.sysroot, path, access)
            .map_err(WitError::from)
            .and_then(|resolved| check(&resolved).map(|()| resolved))
            .and_then(|resolved| op(&resolved, &mut self.env.backups).map_err(|e| io_error(e, path)));
        self.cpu.charge(start.elapsed());
        self.account(start, capability, json!({ "path": path }), &result, summary);
        result
    }
}

/// The host's view of a project for a content check: a dry run's staged changes first, then
/// the files beneath the sysroot, read by the host without a capability check (the step
/// sees nothing of them).
struct HostProject {
    sysroot: crate::sysroot::Sysroot,
    dry: Option<crate::sandbox::DryRun>,
    max: usize,
}

impl content::Project for HostProject {
    fn read(&self, logical: &Path) -> Option<Vec<u8>> {
        match self.dry.as_ref().and_then(|d| d.staged(logical)) {
            Some(Staged::File(content)) => Some(content),
            Some(_) => None,
            None => cap_fs::read_for_host(&self.sysroot, &logical.display().to_string(), self.max).ok(),
        }
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let names = cap_fs::list_for_host(&self.sysroot, &dir.display().to_string()).unwrap_or_default();
        match &self.dry {
            Some(dry) => dry.listing(dir, names),
            None => names,
        }
    }
}

/// What a changing call does to the path, for the dry run's staged view.
enum Staging {
    Write(Vec<u8>),
    Append(Vec<u8>),
    Remove,
    Dir,
}

pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
