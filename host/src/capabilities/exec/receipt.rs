//! Receipts: a changing command's outcome kept outside canup until the journal has it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use std::process::Stdio;

use super::{ExecError, ExecLimits, ExecOutput, ExecRequest, GroupGuard};

/// Where a changing command's outcome is kept until the journal has it, so that killing canup
/// while the command runs neither loses the outcome nor makes a resumed run start the command
/// a second time.
///
/// The command runs under a small shell that outlives canup. Its output goes to files, not
/// pipes (a pipe would die with canup, and the command with it on its next write), and the
/// shell writes the exit status to `ID.status`, which canup locks before starting the shell;
/// the shell inherits the lock and holds it until the command is over. A resumed canup finds
/// the receipt by the action's identity: an unlocked status file with an exit status is the
/// command's finished outcome; a locked one is a command still running, waited for.
#[derive(Debug, Clone)]
pub struct Receipt {
    base: PathBuf,
}

/// What a receipt says of an earlier canup's attempt at the command.
#[derive(Debug)]
pub enum Earlier {
    /// No attempt started the command.
    NeverRan,
    /// The command finished; here is what it printed and returned.
    Finished(ExecOutput),
    /// The command started, but its shell died before it could record an exit status (the
    /// machine went down, or something killed the shell): whether it took effect is unknown.
    Interrupted,
}

impl Receipt {
    /// `id` names the action (no dots); the receipt's files are `DIR/ID.{status,in,out,err}`.
    pub fn new(dir: &Path, id: &str) -> Self {
        Self { base: dir.join(id) }
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.base.with_extension(ext)
    }

    fn status_path(&self) -> PathBuf {
        self.file("status")
    }

    /// The file the command reads as its standard input (the wrapper's `$1`).
    pub(super) fn input(&self, req: &ExecRequest) -> PathBuf {
        if req.stdin.is_some() { self.file("in") } else { PathBuf::from("/dev/null") }
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> ExecError {
        ExecError::Io { program: format!("receipt {}", path.display()), source }
    }

    /// What an earlier attempt left; a command still running from an interrupted canup is
    /// waited for (`waiting` is told its pid) until it ends, or killed after `limits.max_timeout`.
    pub async fn earlier(&self, limits: &ExecLimits, waiting: impl FnOnce(Option<i32>)) -> Result<Earlier, ExecError> {
        let path = self.status_path();
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Earlier::NeverRan),
            Err(e) => return Err(self.io_error(&path, e)),
        };
        let shell_pid =
            || std::fs::read_to_string(&path).ok().and_then(|t| t.lines().find_map(|l| l.strip_prefix("started ").and_then(|p| p.trim().parse::<i32>().ok())));
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = shell_pid();
                waiting(pid);
                let deadline = std::time::Instant::now() + limits.max_timeout;
                let mut killed = false;
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(std::fs::TryLockError::WouldBlock) => {}
                        Err(std::fs::TryLockError::Error(e)) => return Err(self.io_error(&path, e)),
                    }
                    if !killed && std::time::Instant::now() > deadline {
                        // Its own canup, which would have enforced its time limit, is gone.
                        if let Some(pid) = pid {
                            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                        killed = true;
                    }
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(self.io_error(&path, e)),
        }
        let text = std::fs::read_to_string(&path).map_err(|e| self.io_error(&path, e))?;
        let exit = text.lines().find_map(|l| l.strip_prefix("exit ").and_then(|c| c.trim().parse::<i32>().ok()));
        Ok(match exit {
            Some(code) => Earlier::Finished(self.output(Some(code), limits)?),
            None if text.contains("started ") => Earlier::Interrupted,
            None => Earlier::NeverRan,
        })
    }

    /// The receipt's output files as the step sees a command's output.
    fn output(&self, status: Option<i32>, limits: &ExecLimits) -> Result<ExecOutput, ExecError> {
        let read = |ext: &str| {
            let path = self.file(ext);
            read_file_bounded(&path, limits.max_output).map_err(|e| self.io_error(&path, e))
        };
        let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = (read("out")?, read("err")?);
        Ok(ExecOutput { status, stdout, stderr, stdout_truncated, stderr_truncated })
    }

    /// Forgets the receipt once the journal holds the outcome.
    pub fn remove(&self) {
        for ext in ["status", "in", "out", "err"] {
            let _ = std::fs::remove_file(self.file(ext));
        }
    }

    pub(super) async fn run(
        &self,
        mut cmd: tokio::process::Command,
        req: &ExecRequest,
        switched: bool,
        limits: &ExecLimits,
        watch: &super::Watch<'_>,
    ) -> Result<ExecOutput, ExecError> {
        let create = |ext: &str| {
            let path = self.file(ext);
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(|e| self.io_error(&path, e))
        };
        if let Some(dir) = self.base.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| self.io_error(dir, e))?;
        }
        let status = create("status")?;
        // Taken before the shell exists, so that no moment leaves a started command unlocked.
        status.try_lock().map_err(|e| self.io_error(&self.status_path(), std::io::Error::other(format!("held by a command still running ({e})"))))?;
        let input = match &req.stdin {
            Some(data) => {
                let path = self.input(req);
                let mut file = create("in")?;
                std::io::Write::write_all(&mut file, data).map_err(|e| self.io_error(&path, e))?;
                std::io::Seek::rewind(&mut file).map_err(|e| self.io_error(&path, e))?;
                Some(file)
            }
            None => None,
        };
        let status_fd = status.try_clone().map_err(|e| self.io_error(&self.status_path(), e))?;
        if switched {
            let fd = status_fd.as_raw_fd();
            // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made.
            unsafe {
                cmd.pre_exec(move || {
                    let ok = if fd == 3 { nix::libc::fcntl(3, nix::libc::F_SETFD, 0) >= 0 } else { nix::libc::dup2(fd, 3) >= 0 };
                    if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
                });
            }
            cmd.stdin(input.map_or_else(Stdio::null, Stdio::from));
        } else {
            cmd.stdin(Stdio::from(status_fd));
        }
        cmd.stdout(create("out")?).stderr(create("err")?);
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn { program: req.program.clone(), source })?;
        let _group = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
        // The command writes its output to the receipt's files: its last line is read there.
        // Of the two files, the one written last that has something to say (on a tie of
        // modification times, stdout).
        let last_line = || {
            ["err", "out"]
                .into_iter()
                .filter_map(|ext| {
                    let mut file = std::fs::File::open(self.file(ext)).ok()?;
                    let meta = file.metadata().ok()?;
                    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(meta.len().saturating_sub(super::TAIL as u64))).ok()?;
                    let mut tail = Vec::new();
                    std::io::Read::read_to_end(&mut file, &mut tail).ok()?;
                    Some((meta.modified().ok()?, super::last_line_of(&tail)?))
                })
                .max_by_key(|(modified, _)| *modified)
                .map(|(_, line)| line)
        };
        let exit =
            super::supervise(child.wait(), &req.program, watch, last_line).await?.map_err(|e| ExecError::Io { program: req.program.clone(), source: e })?;
        drop(status);
        self.output(exit.code(), limits)
    }
}

/// The first `max` bytes of a file, and whether it held more.
fn read_file_bounded(path: &Path, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut kept = Vec::new();
    file.take(max as u64).read_to_end(&mut kept)?;
    Ok((kept, len > max as u64))
}
