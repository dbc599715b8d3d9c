//! A run's backup set (`crate::backup` keeps the single files steps change): what the host was before the run's first change, taken by canup itself
//! because every migration guide from 22.10 on starts with « Réalisation d'une sauvegarde ».
//!
//! `set.json` is written last, atomically: a set without it is incomplete (a crash while a
//! dump ran) and is taken again by a resumed run, and refused by `canup rollback`. Each file of
//! the set carries its size and sha256, so a rollback refuses a dump that changed on disk.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::{Edition, Method};

/// The name of the set's own record in the run's backup directory.
pub const SET_FILE: &str = "set.json";
/// The installed packages, one per line (see [`Package::line`]).
pub const PACKAGES_FILE: &str = "packages.txt";
/// The configuration directories' copies, by their path on the host.
pub const CONFIG_DIR: &str = "config";

/// A run's backup set (`set.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupSet {
    pub run: String,
    /// When the set was complete (RFC 3339).
    pub taken: String,
    pub installed: Version,
    pub edition: Edition,
    pub method: Method,
    /// The installed packages (package installations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<SavedFile>,
    #[serde(default)]
    pub config: Vec<SavedDir>,
    #[serde(default)]
    pub dumps: Vec<Dump>,
    /// The database endpoints the plan's steps asked a dump of (they migrate them): a
    /// rollback without one of their dumps would put old software on new data.
    #[serde(default)]
    pub asked: Vec<String>,
    /// Endpoints not dumped, and why (`[backup] databases = "never"`).
    #[serde(default)]
    pub not_dumped: Vec<NotDumped>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedFile {
    /// Relative to the run's backup directory.
    pub file: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// One configuration directory, copied file by file under `config/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedDir {
    /// The directory on the host (`/opt/canopsis/etc`).
    pub path: String,
    /// Each regular file: its path on the host → its copy.
    pub files: Vec<SavedConfigFile>,
    /// Symbolic links met and not followed (a rollback leaves them as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedConfigFile {
    pub path: String,
    pub mode: u32,
    #[serde(flatten)]
    pub saved: SavedFile,
}

/// One database's dump.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dump {
    pub endpoint: String,
    /// `postgres` or `mongo`.
    pub engine: String,
    /// The server and database, without the password: what a restore overwrites.
    pub target: String,
    #[serde(flatten)]
    pub saved: SavedFile,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotDumped {
    pub endpoint: String,
    pub why: String,
}

impl BackupSet {
    /// The complete set of `run` under `dir` (the backup directory), if any.
    pub fn read(dir: &Path, run: &str) -> io::Result<Option<Self>> {
        match fs::read(dir.join(run).join(SET_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the set as complete: written last, atomically.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        crate::durable::atomic_replace(&dir.join(&self.run).join(SET_FILE), &bytes)
    }

    /// Every file of the set whose size or digest is not what was recorded, as a sentence
    /// each: what a rollback would restore from is not what was taken.
    pub fn damaged(&self, dir: &Path) -> Vec<String> {
        let run_dir = dir.join(&self.run);
        let files = self
            .packages
            .iter()
            .map(|p| ("the package list".to_owned(), p))
            .chain(self.config.iter().flat_map(|d| d.files.iter().map(|f| (f.path.clone(), &f.saved))))
            .chain(self.dumps.iter().map(|d| (format!("the dump of {}", d.endpoint), &d.saved)));
        files
            .filter_map(|(what, saved)| {
                let path = run_dir.join(&saved.file);
                match digest_file(&path) {
                    Ok((bytes, sha)) if bytes == saved.bytes && sha == saved.sha256 => None,
                    Ok(_) => Some(format!("{what}: {} changed since it was taken", path.display())),
                    Err(e) => Some(format!("{what}: {}: {e}", path.display())),
                }
            })
            .collect()
    }
}

/// Size and sha256 of a file, read in pieces (dumps can be large).
pub fn digest_file(path: &Path) -> io::Result<(u64, String)> {
    use sha2::Digest;
    let mut f = fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let bytes = io::copy(&mut f, &mut hasher)?;
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// [`SavedFile`] of a file of the run's backup directory.
pub fn saved(run_dir: &Path, relative: &Path) -> io::Result<SavedFile> {
    let (bytes, sha256) = digest_file(&run_dir.join(relative))?;
    Ok(SavedFile { file: relative.to_owned(), bytes, sha256 })
}

/// One installed package as rpm names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub epoch: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// When rpm installed it (seconds since the epoch): only in a list read now.
    pub installed_at: Option<u64>,
}

/// What `rpm -qa` prints for [`Package::parse`].
pub const RPM_QUERY_FORMAT: &str = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{INSTALLTIME}\\n";

impl Package {
    /// A line of `rpm -qa --qf RPM_QUERY_FORMAT` (or of `packages.txt`, without the time).
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        let (name, epoch, version, release, arch) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let installed_at = f.next().and_then(|t| t.trim().parse().ok());
        Some(Self { name: name.into(), epoch: epoch.into(), version: version.into(), release: release.into(), arch: arch.trim().into(), installed_at })
    }

    /// Its line in `packages.txt`.
    pub fn line(&self) -> String {
        format!("{}\t{}\t{}\t{}\t{}", self.name, self.epoch, self.version, self.release, self.arch)
    }

    /// `name-[epoch:]version-release.arch`: what dnf and yum take for exactly this package.
    pub fn nevra(&self) -> String {
        let epoch = if self.epoch.is_empty() || self.epoch == "0" { String::new() } else { format!("{}:", self.epoch) };
        format!("{}-{epoch}{}-{}.{}", self.name, self.version, self.release, self.arch)
    }

    fn key(&self) -> (&str, &str) {
        (&self.name, &self.arch)
    }

    fn same_build(&self, other: &Package) -> bool {
        (&self.epoch, &self.version, &self.release) == (&other.epoch, &other.version, &other.release)
    }
}

/// What brings the installed packages back to a recorded list, in one transaction.
#[derive(Debug, Default, PartialEq)]
pub struct PackageChanges {
    /// Installed at another build: (now, recorded).
    pub changed: Vec<(Package, Package)>,
    /// Installed since: removed.
    pub added: Vec<Package>,
    /// Gone since: installed again.
    pub removed: Vec<Package>,
}

impl PackageChanges {
    pub fn between(recorded: &[Package], now: &[Package]) -> Self {
        let before: BTreeMap<_, _> = recorded.iter().map(|p| (p.key(), p)).collect();
        let after: BTreeMap<_, _> = now.iter().map(|p| (p.key(), p)).collect();
        let mut out = Self::default();
        for (key, p) in &after {
            match before.get(key) {
                Some(b) if b.same_build(p) => {}
                Some(b) => out.changed.push(((*p).clone(), (*b).clone())),
                None => out.added.push((*p).clone()),
            }
        }
        out.removed = before.iter().filter(|(k, _)| !after.contains_key(*k)).map(|(_, p)| (*p).clone()).collect();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }

    /// The commands of `dnf shell` (and `yum shell`): one `run`, so one transaction.
    pub fn shell_script(&self) -> String {
        let mut s = String::new();
        if !self.added.is_empty() {
            s.push_str(&format!("remove {}\n", self.added.iter().map(Package::nevra).collect::<Vec<_>>().join(" ")));
        }
        if !self.changed.is_empty() {
            s.push_str(&format!("downgrade {}\n", self.changed.iter().map(|(_, b)| b.nevra()).collect::<Vec<_>>().join(" ")));
        }
        if !self.removed.is_empty() {
            s.push_str(&format!("install {}\n", self.removed.iter().map(Package::nevra).collect::<Vec<_>>().join(" ")));
        }
        s.push_str("run\n");
        s
    }

    /// A line per package, for the operator.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.changed.iter().map(|(now, b)| format!("{}: {}-{} → {}-{}", now.name, now.version, now.release, b.version, b.release)).collect();
        lines.extend(self.added.iter().map(|p| format!("{}: {}-{} removed (installed by the run)", p.name, p.version, p.release)));
        lines.extend(self.removed.iter().map(|p| format!("{}: {}-{} installed again (removed by the run)", p.name, p.version, p.release)));
        lines
    }
}

/// The backup directories of the runs under `dir` with a complete set, oldest first.
fn complete_sets(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut sets = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sets),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if let Ok(Some(set)) = BackupSet::read(dir, &path.file_name().unwrap_or_default().to_string_lossy()) {
            sets.push((set.taken, path));
        }
    }
    sets.sort();
    Ok(sets)
}

/// Removes the oldest complete sets beyond the newest `keep` (the run directories whole,
/// file backups included), never `except` (the run being taken). Returns what it removed.
pub fn prune(dir: &Path, keep: usize, except: &str) -> io::Result<Vec<PathBuf>> {
    let sets: Vec<PathBuf> = complete_sets(dir)?.into_iter().map(|(_, p)| p).filter(|p| p.file_name().is_none_or(|n| n != except)).collect();
    let excess = (sets.len() + 1).saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for path in sets.into_iter().take(excess) {
        fs::remove_dir_all(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

/// Bytes free for an unprivileged writer on the file system holding `dir` (or its nearest
/// existing parent: the directory is made when the set is taken).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let mut at = dir;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(at).map_err(io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, version: &str) -> Package {
        Package::parse(&format!("{name}\t0\t{version}\t1.el8\tx86_64")).unwrap()
    }

    #[test]
    fn the_changes_back_to_a_list_are_one_shell_transaction() {
        let before = [p("canopsis", "23.04.6"), p("canopsis-webui", "23.04.6"), p("bash", "4.4")];
        let now = [p("canopsis", "23.04.14"), p("canopsis-webui", "23.04.14"), p("canopsis-common", "23.04.14"), p("bash", "4.4")];
        let c = PackageChanges::between(&before, &now);
        assert_eq!(c.changed.len(), 2);
        assert_eq!(c.added, [p("canopsis-common", "23.04.14")]);
        assert_eq!(
            c.shell_script(),
            "remove canopsis-common-23.04.14-1.el8.x86_64\ndowngrade canopsis-23.04.6-1.el8.x86_64 canopsis-webui-23.04.6-1.el8.x86_64\nrun\n"
        );
        assert!(PackageChanges::between(&before, &before).is_empty());
        let back = PackageChanges::between(&now, &before);
        assert_eq!(back.removed, [p("canopsis-common", "23.04.14")], "a package gone since is installed again");
        assert!(back.shell_script().contains("install canopsis-common-23.04.14-1.el8.x86_64\n"));
    }

    #[test]
    fn a_set_names_each_file_that_changed_since_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("r1");
        fs::create_dir_all(&run_dir).unwrap();
        fs::write(run_dir.join("postgres.dump"), b"dump").unwrap();
        fs::write(run_dir.join(PACKAGES_FILE), b"bash\t0\t4.4\t1\tx86_64\n").unwrap();
        let set = BackupSet {
            run: "r1".into(),
            taken: "2026-12-06T00:00:00Z".into(),
            installed: Version::new(23, 4, 6),
            edition: Edition::Core,
            method: Method::Packages,
            packages: Some(saved(&run_dir, Path::new(PACKAGES_FILE)).unwrap()),
            config: Vec::new(),
            dumps: vec![Dump {
                endpoint: "postgres".into(),
                engine: "postgres".into(),
                target: "postgresql://canopsis@db/canopsis".into(),
                saved: saved(&run_dir, Path::new("postgres.dump")).unwrap(),
            }],
            asked: vec!["postgres".into()],
            not_dumped: Vec::new(),
        };
        set.write(dir.path()).unwrap();
        assert_eq!(BackupSet::read(dir.path(), "r1").unwrap().as_ref(), Some(&set));
        assert!(set.damaged(dir.path()).is_empty());
        fs::write(run_dir.join("postgres.dump"), b"dumq").unwrap();
        assert_eq!(set.damaged(dir.path()), [format!("the dump of postgres: {} changed since it was taken", run_dir.join("postgres.dump").display())]);
    }

    #[test]
    fn pruning_keeps_the_newest_sets_and_the_run_being_taken() {
        let dir = tempfile::tempdir().unwrap();
        for (run, taken) in [("a", "2026-01-01T00:00:00Z"), ("b", "2026-02-01T00:00:00Z"), ("c", "2026-03-01T00:00:00Z")] {
            fs::create_dir_all(dir.path().join(run)).unwrap();
            let set = BackupSet {
                run: run.into(),
                taken: taken.into(),
                installed: Version::new(23, 4, 6),
                edition: Edition::Core,
                method: Method::Packages,
                packages: None,
                config: Vec::new(),
                dumps: Vec::new(),
                asked: Vec::new(),
                not_dumped: Vec::new(),
            };
            set.write(dir.path()).unwrap();
        }
        fs::create_dir_all(dir.path().join("d")).unwrap();
        let removed = prune(dir.path(), 2, "d").unwrap();
        assert_eq!(removed, [dir.path().join("a"), dir.path().join("b")]);
        assert!(dir.path().join("c").is_dir() && dir.path().join("d").is_dir());
    }
}
