//! Real package management for simulated package hosts: RPMs with the vendor's package names
//! and requirements (`facts/canopsis.toml`, see [`crate::facts`]) built with `rpmbuild`,
//! served per OS as the repositories the installation guides name (`canopsis`,
//! `canopsis-cat`, `canopsis-pro`) made by `createrepo_c`, and installed into the host's root
//! with the real `rpm`. The host's `yum`, `dnf` and `rpm` then run the real tools against that
//! root (the stub program records the call and hands over, see `stub.rs`), so dnf resolves
//! the vendor's requirements for real: updating `canopsis-core` alone leaves
//! `canopsis-engines-go` and `canopsis-webui` behind, as on a real host.
//!
//! The packages carry what the steps read from them (`/opt/canopsis/VERSION.txt` where the
//! vendor's package ships it, the edition's systemd units, the MongoDB migration scripts of
//! 4.x) and no software. They are built once per machine into a cache (`$CANUP_SIM_CACHE`,
//! else `~/.cache/canup-sim`), named by a digest of the facts they are made from, so every host
//! and test shares them; a new release in the facts builds a new cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::facts::{Built, Facts};

/// The packages' systemd template unit of the Go engines (what `systemctl enable
/// canopsis-engine-go@engine-fifo` links to).
pub const ENGINE_UNIT: &str = "/usr/lib/systemd/system/canopsis-engine-go@.service";

/// Where the host keeps the rpm macros its tools read (`HOME` of the stub's rpm and dnf): the
/// database at `/var/lib/rpm` of the root, as on CentOS and RHEL (Debian's rpm defaults to
/// `~/.rpmdb`).
pub const RPM_HOME: &str = "/var/lib/canup-sim/rpm-home";

/// The OSes the facts name, with the `dist` tag of their packages and their `$releasever`.
pub const OSES: &[(&str, &str, &str)] = &[("centos7", "el7", "7"), ("rhel8", "el8", "8"), ("rhel9", "el9", "9")];

/// The `dist` tag of `os` (`el7`).
fn dist(os: &str) -> Result<&'static str> {
    OSES.iter().find(|(o, ..)| *o == os).map(|(_, d, _)| *d).ok_or_else(|| anyhow::anyhow!("unknown OS {os:?} (known: centos7, rhel8, rhel9)"))
}

/// The cache directory of the simulated packages.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CANUP_SIM_CACHE").filter(|d| !d.is_empty()) {
        // rpmbuild's _topdir must be absolute.
        return std::path::absolute(&dir).with_context(|| format!("CANUP_SIM_CACHE {}", PathBuf::from(&dir).display()));
    }
    let home = std::env::var_os("HOME").context("neither CANUP_SIM_CACHE nor HOME is set: canup-sim needs a cache directory for its packages")?;
    Ok(PathBuf::from(home).join(".cache/canup-sim"))
}

fn run(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = command.output().with_context(|| format!("cannot run {shown} (install rpm, dnf and createrepo-c: apt-get install rpm dnf createrepo-c)"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What one `rpmbuild` makes: the packages of one version in one repository of one OS.
struct Batch {
    os: &'static str,
    repository: String,
    version: String,
    packages: Vec<Built>,
}

/// Every batch the facts call for: each known version, each OS, each repository.
fn batches(facts: &Facts) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    for version in facts.versions() {
        for (os, ..) in OSES {
            let mut by_repo: BTreeMap<String, Vec<Built>> = BTreeMap::new();
            for p in facts.packages(&version, os)? {
                by_repo.entry(p.repository.clone()).or_default().push(p);
            }
            out.extend(by_repo.into_iter().map(|(repository, packages)| Batch { os, repository, version: version.clone(), packages }));
        }
    }
    Ok(out)
}

/// The simulated repositories, built on first use: `<os>/<repository>/` (each with its
/// `repodata/`) under the returned directory. Concurrent callers (test threads, processes)
/// each build in a directory of their own and the first rename wins.
pub fn repository() -> Result<PathBuf> {
    let facts = Facts::load()?;
    let batches = batches(&facts)?;
    let digest = {
        // FNV-1a over what the packages are made of (the spec text of every batch): a change
        // of the facts or of the files rebuilds them.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for batch in &batches {
            for b in spec(batch).bytes().chain([0]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    };
    let cache = cache_dir()?;
    let repo = cache.join(format!("repo-{digest:016x}"));
    let done = repo.join(".complete");
    if done.is_file() {
        return Ok(repo);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let work = cache.join(format!(".build-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let _ = std::fs::remove_dir_all(&work);
    let (specs, top, staged) = (work.join("specs"), work.join("rpmbuild"), work.join("repo"));
    std::fs::create_dir_all(&specs)?;
    // Two builders (the machines have two cores), each with its own rpmbuild tree.
    let build_some = |batches: &[Batch], top: &Path| -> Result<()> {
        std::fs::create_dir_all(top)?;
        for batch in batches {
            let file = specs.join(format!("{}-{}-{}.spec", batch.os, batch.repository, batch.version));
            std::fs::write(&file, spec(batch))?;
            let mut build = Command::new("rpmbuild");
            build.args(["-bb", "--quiet"]).arg("--define").arg(format!("_topdir {}", top.display()));
            // gzip payloads: what CentOS 7's rpm reads (zstd needs rpm 4.14+).
            run(build.args(["--define", "_binary_payload w9.gzdio"]).arg(&file))?;
            let to = staged.join(batch.os).join(&batch.repository);
            std::fs::create_dir_all(&to)?;
            for p in &batch.packages {
                let rpm = format!("{}-{}-1.{}.x86_64.rpm", p.name, p.version, dist(batch.os)?);
                std::fs::rename(top.join("RPMS/x86_64").join(&rpm), to.join(&rpm)).with_context(|| format!("rpmbuild made no {rpm}"))?;
            }
        }
        Ok(())
    };
    let (first, second) = batches.split_at(batches.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| build_some(second, &top.join("b")));
        let mine = build_some(first, &top.join("a"));
        other.join().map_err(|_| anyhow::anyhow!("an rpmbuild thread panicked"))?.and(mine)
    })?;
    for (os, ..) in OSES {
        for entry in std::fs::read_dir(staged.join(os))? {
            run(Command::new("createrepo_c").arg("--quiet").arg(entry?.path()))?;
        }
    }
    std::fs::write(staged.join(".complete"), "")?;
    if std::fs::rename(&staged, &repo).is_err() && !done.is_file() {
        bail!("cannot move the simulated repositories into {}", repo.display());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(repo)
}

/// The spec of one batch: its first package is the spec's own, the others subpackages
/// (`%package -n`), so one rpmbuild makes them all.
fn spec(batch: &Batch) -> String {
    let dist = dist(batch.os).unwrap_or("el7");
    let relations = |p: &Built| {
        let mut out = String::new();
        for r in &p.requires {
            out.push_str(&format!("Requires: {r}\n"));
        }
        for c in &p.conflicts {
            out.push_str(&format!("Conflicts: {c}\n"));
        }
        out
    };
    let mut head = String::new();
    let mut install = String::from("%install\n");
    let mut files = String::new();
    for (i, p) in batch.packages.iter().enumerate() {
        let summary = format!("Canopsis package {} (simulated for canup from the vendor's facts)", p.name);
        if i == 0 {
            head.push_str(&format!(
                "Name: {}\nVersion: {}\nRelease: 1.{dist}\nSummary: {summary}\nLicense: AGPL-3.0\nBuildArch: x86_64\n{}%description\nA simulated package: the files canup's steps read, no software.\n",
                p.name,
                p.version,
                relations(p)
            ));
            files.push_str("%files\n");
        } else {
            head.push_str(&format!("%package -n {}\nSummary: {summary}\n{}%description -n {}\nA simulated package.\n", p.name, relations(p), p.name));
            files.push_str(&format!("%files -n {}\n", p.name));
        }
        for (path, content) in package_files(p) {
            install.push_str(&format!(
                "mkdir -p $(dirname %{{buildroot}}{path})\nprintf '%%s' '{}' > %{{buildroot}}{path}\n",
                content.replace('%', "%%").replace('\'', "")
            ));
            files.push_str(&format!("{path}\n"));
        }
    }
    format!("{head}{install}{files}")
}

/// The files a simulated package ships, with their content.
fn package_files(p: &Built) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if p.version_txt {
        out.push(("/opt/canopsis/VERSION.txt".to_owned(), format!("Canopsis version {}\n", p.version)));
    }
    for unit in &p.units {
        let what = unit.trim_end_matches(".service");
        let exec = match what.split_once('@') {
            Some((_, "")) => "/opt/canopsis/bin/%i".to_owned(),
            Some((_, instance)) => format!("/opt/canopsis/bin/{instance}"),
            None => format!("/opt/canopsis/bin/{what}"),
        };
        out.push((
            format!("/usr/lib/systemd/system/{unit}"),
            format!("[Unit]\nDescription=Canopsis {what}\n[Service]\nExecStart={exec}\n[Install]\nWantedBy=multi-user.target\n"),
        ));
    }
    // The 4.x core package ships the MongoDB scripts the 4.5.x notes run.
    if p.name == "canopsis-core" && p.version.starts_with("4.") {
        for s in crate::MIGRATIONS {
            out.push((format!("/opt/canopsis/share/migrations/mongodb/{s}"), format!("// {s}\nprint('migrated {s}');\n")));
        }
    }
    out
}

/// The package file of `name` at `version` for `os` in the simulated repositories.
pub fn package(repo: &Path, os: &str, name: &str, version: &str) -> Result<PathBuf> {
    let file_name = format!("{name}-{version}-1.{}.x86_64.rpm", dist(os)?);
    for entry in std::fs::read_dir(repo.join(os)).with_context(|| format!("the simulated repositories have no {os} packages"))? {
        let file = entry?.path().join(&file_name);
        if file.is_file() {
            return Ok(file);
        }
    }
    bail!("the simulated repositories have no {name} {version} for {os}: add it to facts/canopsis.toml")
}

/// `rpm --root ROOT ARGS` with the host's macros (its database at /var/lib/rpm).
pub fn rpm(root: &Path) -> Command {
    let mut c = Command::new("rpm");
    c.arg("--root").arg(root).env("HOME", root.join(RPM_HOME.trim_start_matches('/'))).env("LC_ALL", "C.UTF-8");
    c
}

/// A host's rpm database with nothing installed (a Compose host), read with the host's macros.
pub fn init(root: &Path) -> Result<()> {
    let home = root.join(RPM_HOME.trim_start_matches('/'));
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join(".rpmmacros"), "%_dbpath /var/lib/rpm\n")?;
    run(rpm(root).arg("--initdb")).map(|_| ())
}

/// Installs Canopsis `version` of `edition` for `os` into a new host's root, as the
/// installation guide leaves it: what the guide installs and what that requires (from the
/// facts), and the repository files it writes in `/etc/yum.repos.d/`.
pub fn install(root: &Path, version: &str, os: &str, edition: &str) -> Result<()> {
    let facts = Facts::load()?;
    let wanted = facts.installed(version, os, edition)?;
    let repo = repository()?;
    init(root)?;
    let repos = root.join("etc/yum.repos.d");
    std::fs::create_dir_all(&repos)?;
    let mut files = Vec::new();
    for p in &wanted {
        files.push(package(&repo, os, &p.name, version)?);
        // As the install guide writes it; the base URL is the simulated repository.
        std::fs::write(repos.join(format!("{}.repo", p.repository)), repo_file(&p.repository, &repo.join(os)))?;
    }
    // No shell in the root for scriptlets, and a database that knows no glibc or nginx.
    run(rpm(root).args(["-i", "--nodeps", "--noscripts"]).args(&files))?;
    Ok(())
}

/// `name-version-release.arch` of every installed package, sorted: the database's content.
pub fn installed(root: &Path) -> Result<Vec<String>> {
    let out = run(rpm(root).args(["-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"]))?;
    let mut list: Vec<String> = out.lines().map(str::to_owned).collect();
    list.sort();
    Ok(list)
}

/// The real dnf against the host's root: its repositories those of the root's
/// `/etc/yum.repos.d`, its rpm macros the root's, nothing of the caller's environment.
pub fn dnf(root: &Path, release_version: &str) -> Command {
    let mut c = Command::new("dnf");
    c.arg(format!("--installroot={}", root.display()))
        .arg(format!("--releasever={release_version}"))
        .arg("--setopt=install_weak_deps=False")
        .env_clear()
        .env("HOME", root.join(RPM_HOME.trim_start_matches('/')))
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C.UTF-8");
    c
}

/// The transactions of the host's dnf history (`ID | Command line | Date | Action(s) |
/// Altered` lines, newest first), as `dnf history` lists them.
pub fn history(root: &Path, release_version: &str) -> Result<Vec<String>> {
    let out = run(dnf(root, release_version).args(["--disablerepo=*", "history", "list"]))?;
    Ok(out.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).map(str::to_owned).collect())
}

/// A copy of the simulated repositories at `dir` without some packages (metadata made again
/// by createrepo_c): a vendor repository that lacks a release (`"3.40.0"`: every package of
/// it) or one package of it (`"canopsis-webui-4.5.5"`).
pub fn mirror_without(dir: &Path, missing: &[&str]) -> Result<PathBuf> {
    let source = repository()?;
    for (os, ..) in OSES {
        for repo_dir in std::fs::read_dir(source.join(os))? {
            let repo_dir = repo_dir?.path();
            let to = dir.join(os).join(repo_dir.file_name().unwrap_or_default());
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(&repo_dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let left_out = missing.iter().any(|m| name.starts_with(&format!("{m}-")) || name.contains(&format!("-{m}-")));
                if name.ends_with(".rpm") && !left_out {
                    std::fs::copy(&path, to.join(&name))?;
                }
            }
            run(Command::new("createrepo_c").arg("--quiet").arg(&to))?;
        }
    }
    Ok(dir.to_path_buf())
}

/// The repository file `id` (`canopsis`, `canopsis-cat`) as the Canopsis install guide writes
/// it, its base URL the simulated repository `repo`.
fn repo_file(id: &str, repo: &Path) -> String {
    format!("[{id}]\nname = {id}\nbaseurl=file://{}/{id}/\ngpgcheck=0\nenabled=1\n", repo.display())
}

/// Points the host's `canopsis*` repository files at `repo` (as made by [`repository`] or
/// [`mirror_without`]), in the directory of the host's OS.
pub fn use_repository(root: &Path, repo: &Path) -> Result<()> {
    let release = std::fs::read_to_string(root.join("var/lib/canup-sim/os")).context("the host does not say its OS (var/lib/canup-sim/os)")?;
    let os = OSES.iter().find(|(.., r)| *r == release.trim()).map(|(o, ..)| *o).ok_or_else(|| anyhow::anyhow!("unknown OS release {release:?}"))?;
    for entry in std::fs::read_dir(root.join("etc/yum.repos.d"))? {
        let file = entry?.path();
        if let Some(id) = file.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".repo")) {
            std::fs::write(&file, repo_file(id, &repo.join(os)))?;
        }
    }
    Ok(())
}
