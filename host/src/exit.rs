//! canup's exit codes: part of the operator's contract (scripts and the Ansible role branch on
//! them), so they are listed once, here. `--help` and the man page print [`ExitCode::help`];
//! a test checks the operator guide's table (`docs/operator-guide.md`) against
//! [`ExitCode::markdown_table`].

/// Why canup stopped, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Success,
    /// A step failed or stopped (error, trap, limit).
    StepFailed,
    /// Bad usage, configuration, manifest, or a local store (state directory, caches).
    Usage,
    /// A module was refused before running (invalid, wrong step API, cannot link).
    ModuleRefused,
    /// The release repository failed verification.
    Repository,
    /// The plan needs more than the operator's policy allows.
    Admission,
    /// Another canup is applying an upgrade.
    Locked,
    /// An interrupted run is pending, or the repository changed under it.
    Pending,
    /// The operator declined the plan.
    Declined,
    /// Every step ran, but detection after the run did not find the target installed.
    Unverified,
    /// The target is in another major version.
    MajorTarget,
    /// The target is older than the installed version.
    Downgrade,
    /// The target is not in the repository.
    NotInRepository,
    /// The target release was withdrawn.
    Withdrawn,
    /// The installed version is not in the repository.
    UnknownInstalled,
    /// The backups before the first change could not be taken (space, a dump failed).
    Backup,
    /// `canup rollback` refused: nothing was changed.
    RollbackRefused,
}

impl ExitCode {
    pub const ALL: [ExitCode; 17] = [
        ExitCode::Success,
        ExitCode::StepFailed,
        ExitCode::Usage,
        ExitCode::ModuleRefused,
        ExitCode::Repository,
        ExitCode::Admission,
        ExitCode::Locked,
        ExitCode::Pending,
        ExitCode::Declined,
        ExitCode::Unverified,
        ExitCode::MajorTarget,
        ExitCode::Downgrade,
        ExitCode::NotInRepository,
        ExitCode::Withdrawn,
        ExitCode::UnknownInstalled,
        ExitCode::Backup,
        ExitCode::RollbackRefused,
    ];

    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::StepFailed => 1,
            ExitCode::Usage => 2,
            ExitCode::ModuleRefused => 3,
            ExitCode::Repository => 4,
            ExitCode::Admission => 5,
            ExitCode::Locked => 6,
            ExitCode::Pending => 7,
            ExitCode::Declined => 8,
            ExitCode::Unverified => 9,
            ExitCode::MajorTarget => 10,
            ExitCode::Downgrade => 11,
            ExitCode::NotInRepository => 12,
            ExitCode::Withdrawn => 13,
            ExitCode::UnknownInstalled => 14,
            ExitCode::Backup => 15,
            ExitCode::RollbackRefused => 16,
        }
    }

    /// What the code tells the operator, and what to do about it.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::StepFailed => "a step failed or stopped (error, trap, limit); `canup apply` again resumes",
            ExitCode::Usage => "bad usage, configuration or manifest, or an unusable state directory or cache",
            ExitCode::ModuleRefused => "a module was refused before running (invalid, wrong step API, cannot link)",
            ExitCode::Repository => "the release repository failed verification (signatures, expiry, rollback, digests, root of trust)",
            ExitCode::Admission => "the plan needs more than the operator's policy allows (no step ran after detection)",
            ExitCode::Locked => "another canup is applying an upgrade",
            ExitCode::Pending => "an interrupted run is pending (`--restart` to abandon it), or the repository changed under it",
            ExitCode::Declined => "the operator declined the plan (or the rollback)",
            ExitCode::Unverified => {
                "every step ran, but detection after the run did not find the target installed (the run is over; see `canup status` and `canup history`)"
            }
            ExitCode::MajorTarget => "major target: follow the migration guide",
            ExitCode::Downgrade => "downgrade",
            ExitCode::NotInRepository => "target not in the repository",
            ExitCode::Withdrawn => "withdrawn release",
            ExitCode::UnknownInstalled => "unknown installed version",
            ExitCode::Backup => "the backups before the first change could not be taken (no space, a dump failed); nothing was changed",
            ExitCode::RollbackRefused => {
                "`canup rollback` refused (a later run, packages changed since, an incomplete or altered backup set, a migration barrier); nothing was changed"
            }
        }
    }

    /// The exit code section of `--help` and of the man page.
    pub fn help() -> String {
        let mut text = String::from("Exit codes:\n");
        for c in Self::ALL {
            text.push_str(&format!("  {:>2}  {}\n", c.code(), c.meaning()));
        }
        text
    }

    /// The operator guide's table.
    pub fn markdown_table() -> String {
        let mut text = String::from("| code | meaning |\n| --- | --- |\n");
        for c in Self::ALL {
            text.push_str(&format!("| {} | {} |\n", c.code(), c.meaning()));
        }
        text
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}
