//! Edits that release notes ask for again and again, as pure text functions (unit-tested on
//! the build machine) plus thin wrappers that read and write through [`crate::fs`].
//!
//! Each wrapper writes only when the content changes, so a step built from them is
//! idempotent: run twice, the second run changes nothing.

use crate::{Error, Result, fs};

/// `grep -q ^PREFIX FILE || echo LINE >> FILE`: the new content when no line starts with
/// `prefix`, or `None` when one does. A missing final newline is added before the line.
pub fn ensure_line_text(content: &str, prefix: &str, line: &str) -> Option<String> {
    if content.lines().any(|l| l.starts_with(prefix)) {
        return None;
    }
    let mut out = content.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    Some(out)
}

/// [`ensure_line_text`] on a file; `Ok(true)` when the line was added.
pub fn ensure_line(path: &str, prefix: &str, line: &str) -> Result<bool> {
    let content = fs::read_to_string(path)?;
    match ensure_line_text(&content, prefix, line) {
        Some(new) => fs::append(path, &new.as_bytes()[content.len()..]).map(|()| true),
        None => Ok(false),
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic()) && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Expands `$NAME` and `${NAME}` from the variables defined so far (unknown ones expand to
/// nothing, as in the shell); refuses command substitution, which cannot be reproduced
/// without running a shell.
fn expand(value: &str, vars: &[(String, String)], lineno: usize) -> Result<String> {
    if value.contains("$(") || value.contains('`') {
        return Err(Error::msg(format!("line {lineno}: command substitution is not supported")));
    }
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut out = String::new();
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| Error::msg(format!("line {lineno}: unclosed ${{")))?;
            out.push_str(&lookup(&braced[..end]));
            rest = &braced[end + 1..];
        } else {
            let len = after.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a systemd `EnvironmentFile` such as `go-engines-vars.conf` into the variables
/// `set -o allexport; source FILE` would export, in order: `KEY=value` lines, optionally
/// prefixed by `export`, with `#`/`;` comments, single quotes (literal), double quotes
/// (with `\"`, `\\`, `\$` escapes) and `$VAR` expansion from earlier lines.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| Error::msg(format!("line {lineno}: expected KEY=value, found {raw:?}")))?;
        if !is_name(key) {
            return Err(Error::msg(format!("line {lineno}: {key:?} is not a variable name")));
        }
        let value = if let Some(inner) = value.strip_prefix('\'') {
            inner.strip_suffix('\'').ok_or_else(|| Error::msg(format!("line {lineno}: unclosed single quote")))?.to_owned()
        } else if let Some(inner) = value.strip_prefix('"') {
            let inner = inner.strip_suffix('"').ok_or_else(|| Error::msg(format!("line {lineno}: unclosed double quote")))?;
            // Escapes first, protecting \$ from expansion with a placeholder.
            let unescaped = inner.replace("\\\\", "\u{0}").replace("\\\"", "\"").replace("\\$", "\u{1}");
            expand(&unescaped, &vars, lineno)?.replace('\u{0}', "\\").replace('\u{1}', "$")
        } else {
            expand(value.trim(), &vars, lineno)?
        };
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

/// [`parse_env_file`] on a file.
pub fn read_env_file(path: &str) -> Result<Vec<(String, String)>> {
    parse_env_file(&fs::read_to_string(path)?).map_err(|e| e.context(path))
}

/// Sets `keys` (a path of tables, then the key) to `value` in a TOML document, keeping its
/// comments and formatting; missing tables are created. `None` when the key already has that
/// value.
pub fn set_toml_key_text(text: &str, keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<Option<String>> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| Error::msg(format!("not valid TOML: {e}")))?;
    let (last, tables) = keys.split_last().ok_or_else(|| Error::msg("no key given"))?;
    let mut table = doc.as_table_mut();
    for (i, name) in tables.iter().enumerate() {
        // A new table that only holds other tables stays implicit: `[Canopsis.api]` alone, not
        // an empty `[Canopsis]` above it.
        let entry = table.entry(name).or_insert_with(|| {
            let mut new = toml_edit::Table::new();
            new.set_implicit(true);
            toml_edit::Item::Table(new)
        });
        table = entry.as_table_mut().ok_or_else(|| Error::msg(format!("{} is not a table", keys[..=i].join("."))))?;
    }
    let value = value.into();
    let bare = |v: &toml_edit::Value| {
        let mut v = v.clone();
        v.decor_mut().clear();
        v.to_string()
    };
    if let Some(existing) = table.get(last).and_then(|i| i.as_value())
        && bare(existing) == bare(&value)
    {
        return Ok(None);
    }
    match table.get_mut(last).and_then(|i| i.as_value_mut()) {
        // Keep the old value's surrounding spaces and trailing comment.
        Some(slot) => {
            let decor = slot.decor().clone();
            *slot = value;
            *slot.decor_mut() = decor;
        }
        None => {
            table.insert(last, toml_edit::Item::Value(value));
        }
    }
    Ok(Some(doc.to_string()))
}

/// Applies `edit` to a file's text and writes the file back only when the edit changed
/// something; `Ok(true)` then.
fn edit_file(path: &str, edit: impl FnOnce(&str) -> Result<Option<String>>) -> Result<bool> {
    let text = fs::read_to_string(path)?;
    match edit(&text).map_err(|e| e.context(path))? {
        Some(new) => fs::write(path, new).map(|()| true),
        None => Ok(false),
    }
}

/// Like [`set_toml_key_text`], but a key the operator already set keeps its value: for a
/// release note's new parameter, whose default the operator may have tuned already. `None`
/// when the key is there.
pub fn add_toml_key_text(text: &str, keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<Option<String>> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| Error::msg(format!("not valid TOML: {e}")))?;
    let mut item = Some(doc.as_item());
    for key in keys {
        item = item.and_then(|i| i.get(key));
    }
    match item {
        Some(_) => Ok(None),
        None => set_toml_key_text(text, keys, value),
    }
}

/// [`add_toml_key_text`] on a file; `Ok(true)` when it added the key.
pub fn add_toml_key(path: &str, keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<bool> {
    edit_file(path, |text| add_toml_key_text(text, keys, value))
}

/// [`set_toml_key_text`] on a file; `Ok(true)` when it changed.
pub fn set_toml_key(path: &str, keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<bool> {
    edit_file(path, |text| set_toml_key_text(text, keys, value))
}

/// The package's `canopsis.toml` (`%config(noreplace)` of the RPMs).
pub const CANOPSIS_TOML: &str = "/opt/canopsis/etc/canopsis.toml";

/// Where the vendor puts an installation's own `canopsis.toml` settings since Canopsis 4.6.0
/// (« le fichier `canopsis-override.toml` permet de surcharger la configuration par défaut »):
/// `canopsis-reconfigure -override` reads it over the package's file, which a package update
/// may then replace freely.
pub const CANOPSIS_OVERRIDE: &str = "/opt/canopsis/etc/conf.d/canopsis-override.toml";

/// A release note's new `canopsis.toml` parameter, for Canopsis 4.6.0 and later: written to
/// [`CANOPSIS_OVERRIDE`] (made when missing), never to the package's file; nothing when the
/// package's file or the override already sets it (an operator's own value is kept). `true`
/// when it was written. The step declares both files in `fs.read`, the override in `fs.write`
/// and `fs.create`, its directory in `fs.write` (contract 1.1: `fs.create-dir`).
pub fn add_canopsis_setting(keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<bool> {
    for file in [CANOPSIS_TOML, CANOPSIS_OVERRIDE] {
        if fs::exists(file)? && add_toml_key_text(&fs::read_to_string(file)?, keys, "")?.is_none() {
            return Ok(false);
        }
    }
    set_canopsis_setting(keys, value)
}

/// Like [`add_canopsis_setting`], but the operator chose the value: set in the override
/// whatever either file says. `true` when the override changed.
pub fn set_canopsis_setting(keys: &[&str], value: impl Into<toml_edit::Value>) -> Result<bool> {
    if fs::exists(CANOPSIS_OVERRIDE)? {
        return set_toml_key(CANOPSIS_OVERRIDE, keys, value);
    }
    let text = set_toml_key_text("", keys, value)?.unwrap_or_default();
    fs::create_dir("/opt/canopsis/etc/conf.d", None)?;
    fs::write(CANOPSIS_OVERRIDE, text).map(|()| true)
}

/// Removes a command-line option (`-alwaysFlushEntities`, also written
/// `-alwaysFlushEntities=true`) from the `ExecStart` lines of a systemd unit or drop-in, leaving
/// every other line as it was. `None` when the option is not there.
pub fn remove_unit_option_text(text: &str, option: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            let Some((key, command)) = body.split_once('=') else { return line.to_owned() };
            if !key.trim().starts_with("ExecStart") {
                return line.to_owned();
            }
            let kept: Vec<&str> =
                command.split_whitespace().filter(|t| !(*t == option || t.strip_prefix(option).is_some_and(|r| r.starts_with('=')))).collect();
            if kept.len() == command.split_whitespace().count() {
                return line.to_owned();
            }
            changed = true;
            format!("{key}={}{ending}", kept.join(" "))
        })
        .collect();
    changed.then(|| lines.concat())
}

/// [`remove_unit_option_text`] on a file; `Ok(true)` when it changed.
pub fn remove_unit_option(path: &str, option: &str) -> Result<bool> {
    edit_file(path, |text| Ok(remove_unit_option_text(text, option)))
}

/// Sets `KEY=value` in a `.env`-style file's text, keeping every other line as it was (an
/// existing `KEY=` line is replaced in place, a missing one appended). `None` when `KEY`
/// already has that value.
pub fn set_env_value_text(text: &str, key: &str, value: &str) -> Option<String> {
    let mut found = false;
    let mut changed = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if k.trim() == key => {
                found = true;
                changed |= v.trim() != value;
                format!("{key}={value}")
            }
            _ => l.to_owned(),
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
        changed = true;
    }
    changed.then(|| out.join("\n") + "\n")
}

/// [`set_env_value_text`] on a file; `Ok(true)` when it changed.
pub fn set_env_value(path: &str, key: &str, value: &str) -> Result<bool> {
    edit_file(path, |text| Ok(set_env_value_text(text, key, value)))
}

/// Where the operator's Docker Compose project is unless canup.toml says otherwise.
pub const DEFAULT_COMPOSE_DIR: &str = "/opt/canopsis/docker";

/// The operator's Docker Compose project (`compose_dir` in canup.toml): the guides name no
/// directory. A step names it `{compose_dir}` in its capabilities.
pub fn compose_dir() -> String {
    crate::context::setting("compose_dir").unwrap_or_else(|| DEFAULT_COMPOSE_DIR.to_owned())
}

/// The tag most of `images` (`repository/name:tag`) carry: what a Compose project runs (a few
/// Canopsis images have a tag of their own, SNMP's for one). `None` without a tagged image.
pub fn most_common_tag<'a>(images: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for image in images {
        let Some((_, tag)) = image.rsplit_once(':').filter(|(name, _)| !name.ends_with('/') && !name.is_empty()) else { continue };
        match counts.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, n)) => *n += 1,
            None => counts.push((tag, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t.to_owned())
}

/// Where Canopsis packages put the MongoDB migration scripts.
pub const MONGO_MIGRATIONS: &str = "/opt/canopsis/share/migrations/mongodb";

/// The engines' environment file the procedures export before `canopsis-reconfigure`. A step
/// never reads it (it holds the databases' passwords): a command that needs it names it as
/// its exec rule's `env_file`, and canup exports it to that command alone.
pub const GO_ENGINES_VARS: &str = "/opt/canopsis/etc/go-engines-vars.conf";

/// Runs MongoDB migration scripts in order, as the release notes' `mongo -u cpsmongo -p … canopsis
/// < releaseX/NNN_script.js` do, on the `mongo` database endpoint (the installation's own
/// `CPS_MONGO_URL`, which canup reads). `scripts` are relative to [`MONGO_MIGRATIONS`].
pub fn run_mongo_scripts(scripts: &[&str]) -> Result<()> {
    for script in scripts {
        let path = format!("{MONGO_MIGRATIONS}/{script}");
        let body = fs::read_to_string(&path)?;
        crate::database::mongo(&body).run().map_err(|e| e.context(format!("applying {script}")))?;
        crate::ui::info(&format!("applied {script}"));
    }
    Ok(())
}

/// The same scripts for a Compose install, whose database canup does not reach: shown as a
/// manual instruction; an error when the operator did not confirm.
pub fn mongo_scripts_manual(release: &str, scripts: &[&str]) -> Result<()> {
    let lines: Vec<String> = scripts.iter().map(|s| format!("  mongo \"mongodb://cpsmongo:canopsis@localhost:27017/canopsis\" < {s}")).collect();
    let instruction = format!(
        "From a machine with a mongo client that reaches the mongodb service, in the database/migrations directory of the canopsis-community release-{release} branch, run (adapt the URI):\n{}",
        lines.join("\n")
    );
    if !crate::ui::manual(&instruction) {
        return Err(Error::msg(format!("the MongoDB scripts of Canopsis {release} were not confirmed; run canup again once they are done")));
    }
    Ok(())
}

/// The Redis server's version, as `INFO server` reports it (`redis_version:5.0.8`), on the
/// `redis` database endpoint. For a release note's "Redis must be version N": checked before
/// anything changes. The step declares the endpoint read-only. `None` in a dry run, where
/// canup lists the query instead of running it.
pub fn redis_version() -> Result<Option<semver::Version>> {
    let out = crate::database::redis("INFO server").read_only().run()?;
    if out.simulated() {
        return Ok(None);
    }
    let text = out.stdout_text();
    let found = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .ok_or_else(|| Error::msg(format!("redis INFO server names no redis_version: {}", text.trim())))?;
    crate::context::parse_version(found).map(Some).ok_or_else(|| Error::msg(format!("Redis reports version {found:?}, which is not a version")))
}

/// The package manager of the host, which each era's procedure names: `yum` on CentOS 7,
/// `dnf` on RHEL 8 and later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Yum,
    Dnf,
}

/// Which package manager an `/etc/os-release` describes: its `VERSION_ID` major, 8 and up
/// being dnf's. `None` when the text names no version.
pub fn package_manager_of(os_release: &str) -> Option<PackageManager> {
    let id = os_release.lines().find_map(|l| l.strip_prefix("VERSION_ID="))?.trim().trim_matches('"');
    let major: u32 = id.split('.').next()?.parse().ok()?;
    Some(if major >= 8 { PackageManager::Dnf } else { PackageManager::Yum })
}

/// The host's package manager, from `/etc/os-release` (the step declares it in `fs.read`).
pub fn package_manager() -> Result<PackageManager> {
    let text = fs::read_to_string("/etc/os-release").map_err(|e| e.context("finding the host's package manager"))?;
    package_manager_of(&text).ok_or_else(|| Error::msg("/etc/os-release names no VERSION_ID: cannot tell yum (CentOS 7) from dnf (RHEL 8)"))
}

impl PackageManager {
    /// Where the program lives on the host.
    pub fn program(self) -> &'static str {
        match self {
            PackageManager::Yum => "/usr/bin/yum",
            PackageManager::Dnf => "/usr/bin/dnf",
        }
    }

    /// `yum|dnf --disablerepo="*" --enablerepo="canopsis*" update -y PACKAGES`, as the
    /// procedures write it; dnf refreshes its metadata first (`dnf makecache`, per the RHEL 8
    /// procedure).
    pub fn update_canopsis(self, packages: &[String]) -> Result<()> {
        if self == PackageManager::Dnf {
            crate::exec::Command::new(self.program()).arg("makecache").run()?;
        }
        crate::exec::Command::new(self.program()).args(CANOPSIS_REPOS).args(["update", "-y"]).args(packages).run()?;
        Ok(())
    }

    /// Every installed Canopsis package to exactly `target`, in one transaction. On dnf, a
    /// Canopsis package the target newly requires (`canopsis-common`, which `canopsis` requires
    /// from 23.04.7 on RHEL 8) is pinned too: left to the resolver it would come at the newest
    /// version the repository has, past the target. dnf's `update` skips a package that is not
    /// installed, so such an update is an `install` of the pinned versions (dnf upgrades what is
    /// installed and installs what is new, in one transaction); without one it is the
    /// procedure's `update`.
    pub fn update_canopsis_to(self, target: &semver::Version) -> Result<()> {
        let installed = installed_canopsis_packages()?;
        let pinned = pinned(&installed, target)?;
        if self == PackageManager::Yum {
            return self.update_canopsis(&pinned);
        }
        crate::exec::Command::new(self.program()).arg("makecache").run()?;
        let out = crate::exec::Command::new(self.program()).args(CANOPSIS_REPOS).args(REQUIRES_QUERY).args(&pinned).run()?;
        let version = crate::context::version_text(target);
        let mut new: Vec<String> = out
            .stdout_text()
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("canopsis") && !installed.iter().any(|p| p.name == *n))
            .map(|n| format!("{n}-{version}"))
            .collect();
        new.sort();
        new.dedup();
        let verb = if new.is_empty() { "update" } else { "install" };
        crate::exec::Command::new(self.program()).args(CANOPSIS_REPOS).args([verb, "-y"]).args(pinned).args(new).run()?;
        Ok(())
    }
}

/// The procedures' `--disablerepo="*" --enablerepo="canopsis*"`: the Canopsis repositories only.
const CANOPSIS_REPOS: [&str; 2] = ["--disablerepo=*", "--enablerepo=canopsis*"];

/// `dnf repoquery` of the names a set of pinned packages requires (read-only).
pub const REQUIRES_QUERY: [&str; 6] = ["repoquery", "-q", "--requires", "--resolve", "--qf", "%{name}"];

/// One installed Canopsis package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// What it requires among Canopsis packages (`canopsis-core` requires
    /// `canopsis-engines-go` and `canopsis-webui` from 4.5.0).
    pub requires: Vec<String>,
}

/// The Canopsis packages installed on the host (`rpm -qa 'canopsis*'`), sorted by name: every
/// era's names (`canopsis-core`, `canopsis-engines-go`, `canopsis-webui`, `canopsis-cat`,
/// `canopsis`, `canopsis-pro`, `canopsis-common`…), with their versions and requirements, in
/// one query. The step declares `/usr/bin/rpm` with exactly [`INSTALLED_QUERY`].
pub fn installed_canopsis_packages() -> Result<Vec<InstalledPackage>> {
    let out = crate::exec::Command::new("/usr/bin/rpm").args(INSTALLED_QUERY).run()?;
    Ok(parse_installed(&out.stdout_text()))
}

/// The arguments of the `rpm` query behind [`installed_canopsis_packages`]: name, version and
/// each required name (rpm's `[…]` iterates over them).
pub const INSTALLED_QUERY: [&str; 4] = ["-qa", "--qf", "%{NAME} %{VERSION}[ %{REQUIRENAME}]\\n", "canopsis*"];

/// `name version requirement…` lines, sorted by name; requirements outside Canopsis
/// (`rpmlib(…)`, `/bin/sh`, `nginx`) left out.
pub fn parse_installed(text: &str) -> Vec<InstalledPackage> {
    let mut out: Vec<InstalledPackage> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, version) = (words.next()?, words.next()?);
            let requires = words.filter(|w| w.starts_with("canopsis")).map(str::to_owned).collect();
            Some(InstalledPackage { name: name.to_owned(), version: version.to_owned(), requires })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every installed Canopsis package pinned to `target` (`canopsis-core-4.5.5
/// canopsis-engines-go-4.5.5 canopsis-webui-4.5.5`): the vendor's procedure updates every
/// package of the Canopsis repositories (an unpinned `update`), canup updates the same
/// packages to exactly the target, never past it, in one transaction.
pub fn pinned_canopsis_packages(target: &semver::Version) -> Result<Vec<String>> {
    pinned(&installed_canopsis_packages()?, target)
}

/// `installed`'s names pinned to `target`.
fn pinned(installed: &[InstalledPackage], target: &semver::Version) -> Result<Vec<String>> {
    if installed.is_empty() {
        return Err(Error::msg("rpm -qa 'canopsis*' lists no Canopsis package: is Canopsis installed by packages?"));
    }
    let target = crate::context::version_text(target);
    Ok(installed.iter().map(|p| format!("{}-{target}", p.name)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_a_new_file_has_only_its_own_table() {
        assert_eq!(
            set_toml_key_text("", &["Canopsis", "api", "ExportMongoClientTimeout"], "1m").unwrap().unwrap(),
            "[Canopsis.api]\nExportMongoClientTimeout = \"1m\"\n"
        );
    }

    #[test]
    fn the_installed_packages_are_read_from_rpms_query_format() {
        let listed = parse_installed(
            "canopsis-webui 4.5.5 rpmlib(FileDigests)\ncanopsis-core 4.5.6 canopsis-engines-go canopsis-webui /bin/sh\n\ncanopsis-engines-go 4.5.6\n",
        );
        let core =
            InstalledPackage { name: "canopsis-core".into(), version: "4.5.6".into(), requires: vec!["canopsis-engines-go".into(), "canopsis-webui".into()] };
        assert_eq!(listed[0], core);
        assert_eq!(listed.len(), 3);
        assert!(listed[2].requires.is_empty(), "rpmlib is not a Canopsis package");
        assert!(INSTALLED_QUERY[2].ends_with("]\\n"), "rpm reads the backslash escape itself");
    }

    #[test]
    fn a_new_toml_key_keeps_the_operators_comments_and_an_existing_value() {
        let operator = "# my settings\n[Canopsis.global]\nPrefetchCount = 10000 # tuned\n";
        let added = add_toml_key_text(operator, &["Canopsis", "api", "ExportMongoClientTimeout"], "1m").unwrap().unwrap();
        assert!(added.starts_with(operator), "{added}");
        assert!(added.contains("[Canopsis.api]\nExportMongoClientTimeout = \"1m\""), "{added}");
        assert_eq!(add_toml_key_text(&added, &["Canopsis", "api", "ExportMongoClientTimeout"], "1m").unwrap(), None);
        let tuned = "[Canopsis.api]\nExportMongoClientTimeout = \"5m\" # large exports\n";
        assert_eq!(add_toml_key_text(tuned, &["Canopsis", "api", "ExportMongoClientTimeout"], "1m").unwrap(), None);
    }

    #[test]
    fn ensure_line_adds_once() {
        let conf = "canopsis.webcore.services.rest=1\n";
        let once = ensure_line_text(conf, "canopsis.webcore.services.metaalarmrule", "canopsis.webcore.services.metaalarmrule=1").unwrap();
        assert_eq!(once, "canopsis.webcore.services.rest=1\ncanopsis.webcore.services.metaalarmrule=1\n");
        assert_eq!(ensure_line_text(&once, "canopsis.webcore.services.metaalarmrule", "canopsis.webcore.services.metaalarmrule=1"), None);
    }

    #[test]
    fn ensure_line_respects_existing_value_and_missing_newline() {
        // The release note's grep checks the key, so an operator's "=0" is kept.
        assert_eq!(ensure_line_text("a=1\nk=0\n", "k", "k=1"), None);
        assert_eq!(ensure_line_text("a=1", "k", "k=1").unwrap(), "a=1\nk=1\n");
        assert_eq!(ensure_line_text("", "k", "k=1").unwrap(), "k=1\n");
        // A prefix must start the line, as with grep ^.
        assert_eq!(ensure_line_text("# k=1\n", "k", "k=1").unwrap(), "# k=1\nk=1\n");
    }

    #[test]
    fn env_file_like_go_engines_vars() {
        let text = "# Canopsis Go engines\nCPS_AMQP_URL=amqp://cpsrabbit:canopsis@localhost/canopsis\n\
                    export CPS_MONGO_URL=\"mongodb://cpsmongo:canopsis@localhost/canopsis\"\n\
                    CPS_DEFAULT_CFG='/opt/canopsis/etc/default_configuration.toml'\n; comment\n\
                    CPS_BASE=/opt/canopsis\nCPS_CFG=${CPS_BASE}/etc/x.toml\nPRICE=\"\\$5 $CPS_BASE\"\n";
        let vars = parse_env_file(text).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CPS_AMQP_URL"), Some("amqp://cpsrabbit:canopsis@localhost/canopsis"));
        assert_eq!(get("CPS_MONGO_URL"), Some("mongodb://cpsmongo:canopsis@localhost/canopsis"));
        assert_eq!(get("CPS_DEFAULT_CFG"), Some("/opt/canopsis/etc/default_configuration.toml"));
        assert_eq!(get("CPS_CFG"), Some("/opt/canopsis/etc/x.toml"));
        assert_eq!(get("PRICE"), Some("$5 /opt/canopsis"));
        assert_eq!(vars.len(), 6);
    }

    #[test]
    fn env_file_errors_name_the_line() {
        assert!(parse_env_file("A=1\nB=$(id)\n").unwrap_err().message.contains("line 2"));
        assert!(parse_env_file("A=1\nnot a var\n").unwrap_err().message.contains("line 2"));
        assert!(parse_env_file("1A=x\n").unwrap_err().message.contains("not a variable name"));
        assert!(parse_env_file("A='x\n").unwrap_err().message.contains("unclosed"));
    }

    #[test]
    fn toml_key_keeps_formatting() {
        let text = "# Canopsis config\n[Canopsis.global]\nPrefetchCount = 10000 # tuned\nReconnectTimeoutMilliseconds = 8\n";
        let out = set_toml_key_text(text, &["Canopsis", "global", "PrefetchCount"], 500).unwrap().unwrap();
        assert_eq!(out, "# Canopsis config\n[Canopsis.global]\nPrefetchCount = 500 # tuned\nReconnectTimeoutMilliseconds = 8\n");
        assert_eq!(set_toml_key_text(&out, &["Canopsis", "global", "PrefetchCount"], 500).unwrap(), None);
        let added = set_toml_key_text(text, &["Canopsis", "alarm", "CancelAutosolveDelay"], "1h").unwrap().unwrap();
        assert!(added.starts_with(text), "{added}");
        assert!(added.contains("[Canopsis.alarm]\nCancelAutosolveDelay = \"1h\"\n"), "{added}");
        assert!(set_toml_key_text("a = 1\n", &["a", "b"], 1).unwrap_err().message.contains("a is not a table"));
    }

    #[test]
    fn env_value_replaced_in_place_or_appended_once() {
        let env = "COMPOSE_PROJECT_NAME=canopsis\nCANOPSIS_IMAGE_TAG=3.38.0\n# comment\n";
        let out = set_env_value_text(env, "CANOPSIS_IMAGE_TAG", "3.40.0").unwrap();
        assert_eq!(out, "COMPOSE_PROJECT_NAME=canopsis\nCANOPSIS_IMAGE_TAG=3.40.0\n# comment\n");
        assert_eq!(set_env_value_text(&out, "CANOPSIS_IMAGE_TAG", "3.40.0"), None);
        assert_eq!(set_env_value_text(&out, "REDIS_TAG", "5.0.8-buster").unwrap(), format!("{out}REDIS_TAG=5.0.8-buster\n"));
    }

    #[test]
    fn unit_option_removed_from_exec_lines_only() {
        let unit = "[Service]\n# -alwaysFlushEntities was needed before 3.39\nExecStart=\nExecStart=/opt/canopsis/bin/engine-che -alwaysFlushEntities -publishQueue Engine_event_filter\nEnvironment=X=-alwaysFlushEntities\n";
        let out = remove_unit_option_text(unit, "-alwaysFlushEntities").unwrap();
        assert_eq!(
            out,
            "[Service]\n# -alwaysFlushEntities was needed before 3.39\nExecStart=\nExecStart=/opt/canopsis/bin/engine-che -publishQueue Engine_event_filter\nEnvironment=X=-alwaysFlushEntities\n"
        );
        assert_eq!(remove_unit_option_text(&out, "-alwaysFlushEntities"), None);
        assert_eq!(remove_unit_option_text("ExecStart=/e -alwaysFlushEntities=true\n", "-alwaysFlushEntities").unwrap(), "ExecStart=/e\n");
        // A longer option sharing the prefix is not touched.
        assert_eq!(remove_unit_option_text("ExecStart=/e -alwaysFlushEntitiesNow\n", "-alwaysFlushEntities"), None);
    }

    #[test]
    fn the_package_manager_follows_the_os_release() {
        assert_eq!(package_manager_of("NAME=\"CentOS Linux\"\nVERSION_ID=\"7\"\n"), Some(PackageManager::Yum));
        assert_eq!(package_manager_of("ID=\"rhel\"\nVERSION_ID=\"8.8\"\n"), Some(PackageManager::Dnf));
        assert_eq!(package_manager_of("VERSION_ID=9.4\n"), Some(PackageManager::Dnf));
        assert_eq!(package_manager_of("NAME=x\n"), None);
    }
}
