//! `cargo xtask dist`: builds the RPM and checks it as an operator's yum would see it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, cargo, ensure_debian_package, installed, output_of};

pub fn run() -> Result<()> {
    let target = canup_tests::target_dir();
    let dist = target.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("cleaning {}", dist.display()))?;
    }
    std::fs::create_dir_all(dist.join("completions"))?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "canup", "--bin", "canup"]);
    util::run(build)?;
    let binary = dist.join("canup");
    std::fs::copy(target.join("release/canup"), &binary)?;
    let mut strip = Command::new("strip");
    strip.arg("-s").arg(&binary);
    util::run(strip)?;
    let canup = |args: &[&str]| {
        let mut c = Command::new(&binary);
        c.args(args);
        output_of(c)
    };
    std::fs::write(dist.join("canup.1"), canup(&["man"])?)?;
    let mut gzip = Command::new("gzip");
    gzip.args(["-9n"]).arg(dist.join("canup.1"));
    util::run(gzip)?;
    for (shell, file) in [("bash", "canup.bash"), ("zsh", "_canup"), ("fish", "canup.fish")] {
        std::fs::write(dist.join("completions").join(file), canup(&["completions", shell])?)?;
    }

    if !installed("cargo-generate-rpm")? {
        eprintln!("xtask: installing cargo-generate-rpm (cargo install)");
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-generate-rpm@0.21.1"]);
        util::run(install)?;
    }
    let mut rpm = cargo();
    // gzip, not the default zstd: the rpm of EL7 cannot read zstd payloads.
    rpm.args(["generate-rpm", "-p", "host", "--payload-compress", "gzip", "-o"]).arg(&dist);
    util::run(rpm)?;
    let package = std::fs::read_dir(&dist)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "rpm"))
        .context("cargo generate-rpm wrote no .rpm")?;
    check_rpm(&package, &dist)?;
    println!("{}", package.display());
    Ok(())
}

/// The checks of the RPM with the `rpm` tool: metadata, file list, the config file marked
/// noreplace, and an install into a scratch root where the binary runs and an edited
/// config survives a reinstall.
fn check_rpm(package: &Path, dist: &Path) -> Result<()> {
    ensure_debian_package("rpm", "rpm")?;
    let rpm = |args: &[&str]| {
        let mut c = Command::new("rpm");
        c.args(args);
        output_of(c)
    };
    let pkg = package.to_str().context("package path is not UTF-8")?;
    let info = rpm(&["-qip", pkg])?;
    println!("{info}");
    for field in ["Name        : canup", "License     : Apache-2.0"] {
        if !info.contains(field) {
            bail!("rpm -qip {pkg}: no {field:?}");
        }
    }
    let files = rpm(&["-qlp", pkg])?;
    println!("{files}");
    let expected = [
        "/etc/canup/canup.toml",
        "/usr/bin/canup",
        "/usr/share/bash-completion/completions/canup",
        "/usr/share/fish/vendor_completions.d/canup.fish",
        "/usr/share/man/man1/canup.1.gz",
        "/usr/share/zsh/site-functions/_canup",
    ];
    let listed: Vec<&str> = files.lines().collect();
    if listed != expected {
        bail!("rpm -qlp {pkg} lists {listed:?}, expected {expected:?}");
    }
    let config = rpm(&["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", pkg])?;
    if !config.lines().any(|l| l == "/etc/canup/canup.toml cn") {
        bail!(
            "/etc/canup/canup.toml is not %config(noreplace) in {pkg}:
{config}"
        );
    }
    let modes = rpm(&["-qp", "--qf", "[%{FILENAMES} %{FILEMODES:perms}\n]", pkg])?;
    for line in ["/usr/bin/canup -rwxr-xr-x", "/etc/canup/canup.toml -rw-r-----"] {
        if !modes.lines().any(|l| l == line) {
            bail!(
                "{pkg}: expected {line:?} in
{modes}"
            );
        }
    }

    let scripts = rpm(&["-qp", "--scripts", pkg])?;
    if !scripts.contains("install -d -m 0700 /var/lib/canup") {
        bail!("{pkg}: no %post creating /var/lib/canup:\n{scripts}");
    }

    // Install into a scratch root (its rpm database knows no glibc: --nodeps; it has no
    // shell to run %post in: --noscripts).
    let root = dist.join("scratch-root");
    let root_s = root.to_str().context("scratch root path is not UTF-8")?;
    std::fs::create_dir_all(&root)?;
    rpm(&["--root", root_s, "--initdb"])?;
    rpm(&["--root", root_s, "-i", "--nodeps", "--noscripts", pkg])?;
    let version = output_of({
        let mut c = Command::new(root.join("usr/bin/canup"));
        c.arg("--version");
        c
    })?;
    println!("installed into {root_s}: {}", version.trim());
    let conf = root.join("etc/canup/canup.toml");
    let mut edited = std::fs::read_to_string(&conf)?;
    edited.push_str(
        "
# edited by the operator
",
    );
    std::fs::write(&conf, &edited)?;
    rpm(&["--root", root_s, "-U", "--replacepkgs", "--nodeps", "--noscripts", pkg])?;
    if std::fs::read_to_string(&conf)? != edited {
        bail!("reinstalling {pkg} replaced the operator's {}", conf.display());
    }
    println!("rpm checks passed: metadata, file list, modes, %config(noreplace), %post, scratch install and reinstall");
    Ok(())
}
