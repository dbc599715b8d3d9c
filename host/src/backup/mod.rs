//! What canup keeps so that a run can be undone, under the backup directory
//! (`[backup] dir`, `STATE/backups` unless stated), one directory per run:
//! - [`files`]: each file a step changes, saved before its first change (`restore-files`);
//! - [`set`]: the run's backup set, taken before its first change: the installed packages,
//!   the configuration directories and the database dumps (`canup rollback`).
//!
//! Below everything that changes the host: nothing here knows the sysroot or runs a command.
//! Taking the set (commands, databases) is the upgrade's (`crate::upgrade::backups`).

mod files;
pub mod set;

pub use files::{BackupEntry, Backups, Original};
