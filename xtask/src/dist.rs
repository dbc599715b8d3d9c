//! `cargo xtask dist`: builds the RPM and checks it as an operator's yum would see it.
//!
//! The binary is built for glibc 2.17 (CentOS 7, the oldest OS a supported Canopsis runs on)
//! with cargo-zigbuild: zig links against the 2.17 symbol versions while rustc targets the
//! same `x86_64-unknown-linux-gnu`. A static musl build was measured too and not chosen
//! (README, "Install"): it compiles step modules 1.75x slower (musl's allocator under
//! cranelift's threads) for 4 MB less memory. `dist` checks what it built: the binary's
//! highest `GLIBC_` symbol version, the RPM's `Requires:` and rpmlib features (nothing CentOS
//! 7's rpm 4.11 cannot read or provide), and the payload's compressor.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, cargo, ensure_debian_package, installed, output_of};

/// The glibc of CentOS 7: nothing canup needs may be newer.
const GLIBC_MAX: (u32, u32) = (2, 17);
/// The target cargo-zigbuild builds: the host triple, linked against glibc 2.17.
const ZIG_TARGET: &str = "x86_64-unknown-linux-gnu.2.17";
/// From PyPI, pinned: zig as a linker for old glibc versions, and the cargo subcommand.
const ZIG_PACKAGES: [&str; 2] = ["ziglang==0.17.1", "cargo-zigbuild==0.24.1"];
/// What rpm 4.11 (CentOS 7) knows among the `rpmlib(...)` features a package may require.
const RPMLIB_4_11: &[&str] = &[
    "BuiltinLuaScripts",
    "CompressedFileNames",
    "ConcurrentAccess",
    "ExplicitPackageProvide",
    "FileCaps",
    "FileDigests",
    "HeaderLoadSortsTags",
    "PartialHardlinkSets",
    "PayloadFilesHavePrefix",
    "PayloadIsBzip2",
    "PayloadIsLzma",
    "PayloadIsXz",
    "ScriptletExpansion",
    "ScriptletInterpreterArgs",
    "TildeInVersions",
    "VersionedDependencies",
];

pub fn run() -> Result<()> {
    let target = canup_tests::target_dir();
    let dist = target.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("cleaning {}", dist.display()))?;
    }
    std::fs::create_dir_all(dist.join("completions"))?;
    let zig = ensure_zigbuild()?;
    let mut build = cargo();
    let path = format!("{}:{}", zig.display(), std::env::var("PATH").unwrap_or_default());
    build.env("PATH", path).args(["zigbuild", "--release", "-p", "canup", "--bin", "canup", "--target", ZIG_TARGET]);
    util::run(build)?;
    let binary = dist.join("canup");
    std::fs::copy(target.join("x86_64-unknown-linux-gnu/release/canup"), &binary)?;
    let mut strip = Command::new("strip");
    strip.arg("-s").arg(&binary);
    util::run(strip)?;
    let symbols = output_of({
        let mut c = Command::new("objdump");
        c.arg("-T").arg(&binary);
        c
    })?;
    let needed = glibc_needed(&symbols).context("the binary names no GLIBC_ symbol version: is it linked against glibc?")?;
    if needed > GLIBC_MAX {
        bail!("{} needs GLIBC_{}.{}, newer than CentOS 7's {}.{}: it would not start there", binary.display(), needed.0, needed.1, GLIBC_MAX.0, GLIBC_MAX.1);
    }
    println!("{}: needs at most GLIBC_{}.{} (CentOS 7 has {}.{})", binary.display(), needed.0, needed.1, GLIBC_MAX.0, GLIBC_MAX.1);
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
    let requires = rpm(&["-qp", "--requires", pkg])?;
    println!("{requires}");
    check_requires(&requires).with_context(|| format!("{pkg} would not install on CentOS 7"))?;
    let compressor = rpm(&["-qp", "--qf", "%{PAYLOADCOMPRESSOR}", pkg])?;
    if !matches!(compressor.trim(), "gzip" | "xz" | "bzip2") {
        bail!("{pkg}: payload compressed with {compressor:?}, which CentOS 7's rpm 4.11 cannot read (gzip, xz or bzip2)");
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

/// cargo-zigbuild and zig from PyPI in `target/zig-venv` (created on first use); returns its
/// `bin` directory, to put first on PATH.
fn ensure_zigbuild() -> Result<PathBuf> {
    let venv = canup_tests::target_dir().join("zig-venv");
    let bin = venv.join("bin");
    if bin.join("cargo-zigbuild").is_file() && bin.join("python-zig").is_file() {
        return Ok(bin);
    }
    eprintln!("xtask: installing {} into {} (pip)", ZIG_PACKAGES.join(" "), venv.display());
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    util::run(c)?;
    let mut pip = Command::new(bin.join("pip"));
    pip.args(["install", "--quiet"]).args(ZIG_PACKAGES);
    util::run(pip)?;
    Ok(bin)
}

/// The highest `GLIBC_x.y` symbol version in `objdump -T` output.
fn glibc_needed(symbols: &str) -> Option<(u32, u32)> {
    symbols.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).filter_map(glibc_version).max()
}

/// `GLIBC_2.17` → (2, 17); `GLIBC_2.2.5` → (2, 2).
fn glibc_version(word: &str) -> Option<(u32, u32)> {
    let mut parts = word.strip_prefix("GLIBC_")?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The RPM's `Requires:` (as `rpm -qp --requires` lists them): no glibc symbol version newer
/// than CentOS 7's, and only rpmlib features its rpm 4.11 has.
fn check_requires(requires: &str) -> Result<()> {
    for line in requires.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(feature) = line.strip_prefix("rpmlib(").and_then(|f| f.split(')').next()) {
            if !RPMLIB_4_11.contains(&feature) {
                bail!("it requires {line}, which CentOS 7's rpm 4.11 does not have");
            }
        } else if let Some(needed) = glibc_needed(line).filter(|v| *v > GLIBC_MAX) {
            bail!("it requires {line} (glibc {}.{}; CentOS 7 has {}.{})", needed.0, needed.1, GLIBC_MAX.0, GLIBC_MAX.1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `dist` refuses: a binary or a package needing a glibc newer than 2.17 (as the
    /// Debian 12 build did: GLIBC_2.34), or an rpmlib feature rpm 4.11 lacks.
    #[test]
    fn newer_glibc_and_unknown_rpmlib_features_are_refused() {
        let objdump = "0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) memcpy\n0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.17) clock_gettime\n";
        assert_eq!(glibc_needed(objdump), Some((2, 17)));
        assert_eq!(glibc_needed(&format!("{objdump}0000000000000000      DF *UND*  (GLIBC_2.34) __libc_start_main\n")), Some((2, 34)));
        let ok = "libc.so.6()(64bit)\nlibc.so.6(GLIBC_2.17)(64bit)\nrpmlib(CompressedFileNames) <= 3.0.4-1\nrpmlib(PayloadFilesHavePrefix) <= 4.0-1\n";
        assert!(check_requires(ok).is_ok());
        let e = check_requires(&format!("{ok}libc.so.6(GLIBC_2.34)(64bit)\n")).unwrap_err().to_string();
        assert!(e.contains("GLIBC_2.34") && e.contains("CentOS 7 has 2.17"), "{e}");
        let e = check_requires(&format!("{ok}rpmlib(PayloadIsZstd) <= 5.4.18-1\n")).unwrap_err().to_string();
        assert!(e.contains("PayloadIsZstd"), "{e}");
    }
}
