//! Real package management for simulated package hosts: fake `canopsis-core` and
//! `canopsis-cat` RPMs built with `rpmbuild`, served as `canopsis` and `canopsis-cat`
//! repositories made by `createrepo_c`, and installed into the host's root with the real `rpm`.
//! The host's `yum`, `dnf` and `rpm` then run the real tools against that root (the stub
//! program records the call and hands over, see `stub.rs`).
//!
//! The packages carry what the steps read from them (`/opt/canopsis/VERSION.txt`, the
//! engines' systemd template unit, the MongoDB migration scripts of 4.x) and the real
//! dependency: `canopsis-cat` requires `canopsis-core` of the same version. They are built once
//! per machine into a cache (`$CANUP_SIM_CACHE`, else `~/.cache/canup-sim`), named by a
//! digest of what they are made from, so every host and test shares them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every version the simulated repositories offer: every release of the catalogue (3.37.0 to
/// 23.10.8, as Canopsis spells them) and 3.41.0 of the step author's guide; a test keeps the
/// list equal to the published releases. A version missing here is "No match for argument"
/// for dnf, as on a real host whose repository lacks it.
pub const VERSIONS: &[&str] = &[
    "3.37.0", "3.38.0", "3.39.0", "3.39.1", "3.40.0", "3.41.0", "4.0.0", "4.0.1", "4.0.2", "4.0.3", "4.1.0", "4.1.1", "4.2.0", "4.3.0", "4.3.1", "4.3.2",
    "4.3.3", "4.3.4", "4.3.5", "4.3.6", "4.3.7", "4.3.8", "4.4.0", "4.4.1", "4.5.0", "4.5.1", "4.5.2", "4.5.3", "4.5.4", "4.5.5", "4.5.6", "4.5.7", "4.5.8",
    "4.5.9", "4.5.10", "4.5.11", "4.5.12", "4.5.13", "4.5.14", "4.6.0", "4.6.1", "4.6.2", "4.6.3", "22.10.0", "22.10.1", "22.10.2", "22.10.3", "22.10.4",
    "22.10.5", "22.10.6", "22.10.7", "22.10.8", "22.10.9", "22.10.10", "22.10.13", "23.04.0", "23.04.1", "23.04.2", "23.04.3", "23.04.4", "23.04.5", "23.04.6",
    "23.04.7", "23.04.8", "23.04.9", "23.04.10", "23.04.11", "23.04.12", "23.04.13", "23.04.14", "23.10.0", "23.10.1", "23.10.2", "23.10.3", "23.10.4",
    "23.10.5", "23.10.6", "23.10.7", "23.10.8",
];

/// The packages' systemd template unit of the Go engines (what `systemctl enable
/// canopsis-engine-go@engine-fifo` links to).
pub const ENGINE_UNIT: &str = "/usr/lib/systemd/system/canopsis-engine-go@.service";

/// Where the host keeps the rpm macros its tools read (`HOME` of the stub's rpm and dnf): the
/// database at `/var/lib/rpm` of the root, as on CentOS and RHEL (Debian's rpm defaults to
/// `~/.rpmdb`).
pub const RPM_HOME: &str = "/var/lib/canup-sim/rpm-home";

const CORE_SPEC: &str = r#"Name: canopsis-core
Version: %{ver}
Release: 1.el7
Summary: Canopsis Community (simulated for canup)
License: AGPL-3.0
BuildArch: x86_64
%description
A simulated Canopsis core package: the files canup's steps read, no software.
%install
mkdir -p %{buildroot}/opt/canopsis %{buildroot}/usr/lib/systemd/system
echo "Canopsis version %{ver}" > %{buildroot}/opt/canopsis/VERSION.txt
printf '[Unit]\nDescription=Canopsis Go engine %%i\n[Service]\nExecStart=/opt/canopsis/bin/%%i\n[Install]\nWantedBy=multi-user.target\n' > %{buildroot}/usr/lib/systemd/system/canopsis-engine-go@.service
printf '[Unit]\nDescription=Canopsis service %%i\n[Service]\nExecStart=/opt/canopsis/bin/%%i\n[Install]\nWantedBy=multi-user.target\n' > %{buildroot}/usr/lib/systemd/system/canopsis-service@.service
%{?migrations}
%files
/opt/canopsis/VERSION.txt
/usr/lib/systemd/system/canopsis-engine-go@.service
/usr/lib/systemd/system/canopsis-service@.service
%{?migration_files}
"#;

const CAT_SPEC: &str = r#"Name: canopsis-cat
Version: %{ver}
Release: 1.el7
Summary: Canopsis Pro (simulated for canup)
License: Proprietary
BuildArch: x86_64
Requires: canopsis-core = %{ver}
%description
A simulated Canopsis Pro package.
%install
mkdir -p %{buildroot}/opt/canopsis/share/cat
echo "%{ver}" > %{buildroot}/opt/canopsis/share/cat/VERSION
%files
/opt/canopsis/share/cat/VERSION
"#;

/// The cache directory of the simulated packages.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CANUP_SIM_CACHE") {
        return Ok(PathBuf::from(dir));
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

/// The simulated repositories (`canopsis/` and `canopsis-cat/`, each with its `repodata/`),
/// built on first use. Concurrent callers (test threads, processes) each build in a
/// directory of their own and the first rename wins.
pub fn repository() -> Result<PathBuf> {
    let digest = {
        // FNV-1a over what the packages are made of (specs and every version's definitions):
        // a change rebuilds them.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let definitions: Vec<String> = VERSIONS.iter().map(|v| format!("{v}:{}", migrations(v).0)).collect();
        for part in [CORE_SPEC, CAT_SPEC, &definitions.join(",")] {
            for b in part.bytes().chain([0]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    };
    let cache = cache_dir()?;
    let repo = cache.join(format!("repo-{digest:016x}"));
    if repo.join("canopsis-cat/repodata/repomd.xml").is_file() {
        return Ok(repo);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let work = cache.join(format!(".build-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let _ = std::fs::remove_dir_all(&work);
    let (specs, top, staged) = (work.join("specs"), work.join("rpmbuild"), work.join("repo"));
    for dir in [&specs, &staged.join("canopsis"), &staged.join("canopsis-cat")] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(specs.join("core.spec"), CORE_SPEC)?;
    std::fs::write(specs.join("cat.spec"), CAT_SPEC)?;
    // Two builders (the machines have two cores), each with its own rpmbuild tree.
    let build_some = |versions: &[&str], top: &Path| -> Result<()> {
        std::fs::create_dir_all(top)?;
        for version in versions {
            let (install, files) = migrations(version);
            for (spec, repo_dir) in [("core.spec", "canopsis"), ("cat.spec", "canopsis-cat")] {
                let mut build = Command::new("rpmbuild");
                build.args(["-bb", "--quiet"]).arg("--define").arg(format!("_topdir {}", top.display())).arg("--define").arg(format!("ver {version}"));
                if !install.is_empty() {
                    build.arg("--define").arg(format!("migrations {install}")).arg("--define").arg(format!("migration_files {files}"));
                }
                // gzip payloads: what CentOS 7's rpm reads (zstd needs rpm 4.14+).
                run(build.args(["--define", "_binary_payload w9.gzdio"]).arg(specs.join(spec)))?;
                let name = if repo_dir == "canopsis" { "canopsis-core" } else { "canopsis-cat" };
                let file = format!("{name}-{version}-1.el7.x86_64.rpm");
                std::fs::rename(top.join("RPMS/x86_64").join(&file), staged.join(repo_dir).join(&file)).with_context(|| format!("rpmbuild made no {file}"))?;
            }
        }
        Ok(())
    };
    let (first, second) = VERSIONS.split_at(VERSIONS.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| build_some(second, &top.join("b")));
        let mine = build_some(first, &top.join("a"));
        other.join().map_err(|_| anyhow::anyhow!("an rpmbuild thread panicked"))?.and(mine)
    })?;
    for repo_dir in ["canopsis", "canopsis-cat"] {
        run(Command::new("createrepo_c").arg("--quiet").arg(staged.join(repo_dir)))?;
    }
    if std::fs::rename(&staged, &repo).is_err() && !repo.join("canopsis-cat/repodata/repomd.xml").is_file() {
        bail!("cannot move the simulated repositories into {}", repo.display());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(repo)
}

/// The `%install` commands and `%files` entry of the MongoDB migration scripts a version's
/// core package ships (the 4.5 packages ship those the 4.5.x notes run): one line, as an rpm
/// macro definition is.
fn migrations(version: &str) -> (String, String) {
    if !version.starts_with("4.") {
        return (String::new(), String::new());
    }
    let install = crate::MIGRATIONS
        .iter()
        .map(|s| {
            let path = format!("%{{buildroot}}/opt/canopsis/share/migrations/mongodb/{s}");
            format!("mkdir -p $(dirname {path}) && echo '// {s}' > {path} && echo \"print('migrated {s}');\" >> {path}")
        })
        .collect::<Vec<_>>()
        .join(" && ");
    (install, "/opt/canopsis/share/migrations".to_owned())
}

/// The package file of `name` at `version` in the simulated repositories.
pub fn package(repo: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let dir = if name == "canopsis-cat" { "canopsis-cat" } else { "canopsis" };
    let file = repo.join(dir).join(format!("{name}-{version}-1.el7.x86_64.rpm"));
    if !file.is_file() {
        bail!("the simulated repositories have no {name} {version}: add it to canup_sim::packages::VERSIONS");
    }
    Ok(file)
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

/// Installs the packages of `version` (core, and cat for Pro) into a new host's root, as the
/// Canopsis install guide leaves it: its repository files in `/etc/yum.repos.d/`.
pub fn install(root: &Path, version: &str, pro: bool) -> Result<()> {
    let repo = repository()?;
    init(root)?;
    let repos = root.join("etc/yum.repos.d");
    std::fs::create_dir_all(&repos)?;
    let mut packages = vec![package(&repo, "canopsis-core", version)?];
    let mut repo_files = vec!["canopsis"];
    if pro {
        packages.push(package(&repo, "canopsis-cat", version)?);
        repo_files.push("canopsis-cat");
    }
    for id in repo_files {
        // As the install guide writes them; the base URL is the simulated repository.
        std::fs::write(repos.join(format!("{id}.repo")), repo_file(id, &repo))?;
    }
    // No shell in the root for scriptlets, and a database that knows no glibc.
    run(rpm(root).args(["-i", "--nodeps", "--noscripts"]).args(&packages))?;
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

/// A copy of the simulated repositories at `dir` without the packages of `missing` versions
/// (metadata made again by createrepo_c): a vendor repository that lacks a release.
pub fn mirror_without(dir: &Path, missing: &[&str]) -> Result<PathBuf> {
    let source = repository()?;
    for repo_dir in ["canopsis", "canopsis-cat"] {
        let to = dir.join(repo_dir);
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(source.join(repo_dir))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.ends_with(".rpm") && !missing.iter().any(|v| name.contains(&format!("-{v}-"))) {
                std::fs::copy(&path, to.join(&name))?;
            }
        }
        run(Command::new("createrepo_c").arg("--quiet").arg(&to))?;
    }
    Ok(dir.to_path_buf())
}

/// The repository file `id` (`canopsis`, `canopsis-cat`) as the Canopsis install guide writes
/// it, its base URL the simulated repository `repo`.
fn repo_file(id: &str, repo: &Path) -> String {
    format!("[{id}]\nname = {id}\nbaseurl=file://{}/{id}/\ngpgcheck=0\nenabled=1\n", repo.display())
}

/// Points the host's `canopsis*` repository files at `repo` (as made by [`repository`] or
/// [`mirror_without`]).
pub fn use_repository(root: &Path, repo: &Path) -> Result<()> {
    for id in ["canopsis", "canopsis-cat"] {
        let file = root.join("etc/yum.repos.d").join(format!("{id}.repo"));
        if file.is_file() {
            std::fs::write(&file, repo_file(id, repo))?;
        }
    }
    Ok(())
}
