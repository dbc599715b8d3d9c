//! Compose files under content rules.
//!
//! `docker compose up -d` runs as root what the project's Compose files say: a step allowed to
//! rewrite `docker-compose.yml` and run Compose could start a privileged container with `/`
//! mounted. So a change to a Compose file, or to the project's `.env` (Compose reads the
//! variables its files interpolate from it: `image: ${DOCKER_REPOSITORY}…`), is judged by the
//! services and top-level definitions it changes, read as Compose will read them (anchors and
//! merge keys resolved by `canup-yaml`, as the step SDK's resync reads them; `${VAR}` replaced
//! from `.env`):
//!
//! - the image must match one of the policy's `[policy.compose] images`, which the shipped
//!   policy lists from the vendor's reference sets (`facts/compose.toml`), and `build` is
//!   refused (it runs a Dockerfile);
//! - no `privileged`, `cap_add`, `security_opt`, `devices`, `device_cgroup_rules`,
//!   `cgroup_parent`, and no host `pid`, `ipc`, `uts`, `userns_mode`, `cgroup` or
//!   `network_mode`; no `extends` nor a new top-level `include` (they bring in files no rule
//!   judges);
//! - a bind mount's host path must match one of `host_mounts` (the reference's `./files/…`)
//!   and hold no `..`;
//! - a top-level volume with `driver_opts` (a named volume bound to a host path) or a config
//!   or secret read from a `file` is refused.
//!
//! What the operator's file already had (a service unchanged by the write) is not judged.

use std::collections::BTreeMap;

use canup_yaml::Value;
use globset::GlobMatcher;
use serde::{Deserialize, Serialize};

use super::super::{PatternError, glob};

/// The operator's bounds on what a step writes into a Compose project.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComposeRules {
    /// Images (globs on the reference after interpolation, `registry/name:tag`) a changed
    /// service may run.
    #[serde(default)]
    pub images: Vec<String>,
    /// Host paths (globs, as the Compose file writes them: `./files/**`) a changed service may
    /// mount.
    #[serde(default)]
    pub host_mounts: Vec<String>,
}

impl ComposeRules {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.host_mounts.is_empty()
    }

    pub(crate) fn add(&mut self, other: &ComposeRules) {
        super::super::extend(&mut self.images, &other.images);
        super::super::extend(&mut self.host_mounts, &other.host_mounts);
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledComposeRules {
    images: Vec<GlobMatcher>,
    host_mounts: Vec<GlobMatcher>,
}

impl CompiledComposeRules {
    pub(crate) fn new(rules: &ComposeRules, origin: &str) -> Result<Self, PatternError> {
        let compile = |list: &[String]| list.iter().map(|p| glob(p, true, origin)).collect::<Result<Vec<_>, _>>();
        Ok(Self { images: compile(&rules.images)?, host_mounts: compile(&rules.host_mounts)? })
    }
}

/// A file Compose reads as a project file: `docker-compose*.yml`, `*.docker-compose.yml`
/// (Pro's split reference), `compose*.yaml` (Compose v2's names).
pub fn is_compose_file(name: &str) -> bool {
    let yaml = name.ends_with(".yml") || name.ends_with(".yaml");
    yaml && (name.starts_with("docker-compose") || name.contains(".docker-compose.") || name.starts_with("compose"))
}

/// The `NAME=value` lines of a dotenv file (quotes taken off, comments skipped).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
            (k.trim().to_owned(), unquoted.unwrap_or(v).to_owned())
        })
        .collect()
}

/// `text` with `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:+alt}`, `$NAME`
/// replaced as Compose replaces them (`$$` is a `$`). A name `.env` does not set stays as
/// `${NAME}`, whatever default the file gives: Compose would take it from the environment
/// of `docker compose up`, which a step may set (`CPS_EDITION`), so canup cannot know it; an
/// image that starts with one matches no rule, a host path holding one is refused.
pub fn interpolate(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = r.char_indices().find(|&(_, c)| {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                depth == 0
            });
            let Some((end, _)) = end else {
                out.push_str("${");
                rest = r;
                continue;
            };
            out.push_str(&expand(&r[..end], env));
            rest = &r[end + 1..];
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            match env.get(&rest[..end]) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("${{{}}}", &rest[..end])),
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn expand(inner: &str, env: &BTreeMap<String, String>) -> String {
    let end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
    let (name, op) = inner.split_at(end);
    let Some(value) = env.get(name) else { return format!("${{{name}}}") };
    let word = |skip: usize| interpolate(&op[skip..], env);
    match op {
        _ if op.starts_with(":-") && value.is_empty() => word(2),
        _ if op.starts_with(":+") && !value.is_empty() => word(2),
        _ if op.starts_with('+') => word(1),
        _ if op.starts_with(":+") => String::new(),
        _ => value.clone(),
    }
}

/// Every string of `v` interpolated.
fn interpolated(v: &Value, env: &BTreeMap<String, String>) -> Value {
    match v {
        Value::Str(s) => Value::Str(interpolate(s, env)),
        Value::Seq(items) => Value::Seq(items.iter().map(|i| interpolated(i, env)).collect()),
        Value::Map(entries) => Value::Map(entries.iter().map(|(k, v)| (k.clone(), interpolated(v, env))).collect()),
        other => other.clone(),
    }
}

/// The entries of a top-level section (`services`, `volumes`…) of a file's meaning.
fn section<'a>(file: &'a Value, name: &str) -> Vec<(&'a str, &'a Value)> {
    match file.get(name) {
        Some(Value::Map(entries)) => entries.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        _ => Vec::new(),
    }
}

/// Judges the change of one Compose file from `old` to `new` (texts, `None`: absent), each
/// read with its `.env`: the reason it is refused, if it is.
pub(crate) fn judge(
    rules: &CompiledComposeRules,
    old: Option<(&str, &BTreeMap<String, String>)>,
    new: (&str, &BTreeMap<String, String>),
) -> Result<(), String> {
    let read = |(text, env): (&str, &BTreeMap<String, String>)| canup_yaml::parse(text).map(|v| interpolated(&v, env));
    let new = read(new).map_err(|e| format!("it cannot be read as YAML ({e}), and Compose would run what it says"))?;
    // An old file canup cannot read is judged as absent: everything the new one says is judged.
    let old = old.and_then(|o| read(o).ok()).unwrap_or(Value::Null);
    let changed = |section_name: &str| {
        let before = section(&old, section_name);
        section(&new, section_name).into_iter().filter(move |(name, def)| !before.iter().any(|(n, d)| n == name && d.same(def))).collect::<Vec<_>>()
    };
    for (name, def) in changed("services") {
        service(rules, def).map_err(|why| format!("service {name}: {why}"))?;
    }
    if new.get("include").is_some_and(|inc| old.get("include").is_none_or(|o| !o.same(inc))) {
        return Err("it includes other Compose files (top-level include), which no rule judges".into());
    }
    for (name, def) in changed("volumes") {
        if def.get("driver_opts").is_some() {
            return Err(format!("volume {name} has driver_opts (a named volume bound to a host path)"));
        }
    }
    for kind in ["configs", "secrets"] {
        for (name, def) in changed(kind) {
            if def.get("file").is_some() {
                return Err(format!("{kind} {name} is read from a host file"));
            }
        }
    }
    Ok(())
}

/// Settings that give a container the host: refused on a changed service whatever their value
/// (`privileged` only when true, the namespaces only when `host`).
/// `extends` (and the top-level `include`) would bring in services from a file no rule judges
/// (a `*.env` file a step may rewrite can hold YAML).
const REFUSED: &[&str] = &["cap_add", "security_opt", "devices", "device_cgroup_rules", "cgroup_parent", "build", "extends"];
const NAMESPACES: &[&str] = &["pid", "ipc", "uts", "userns_mode", "cgroup", "network_mode"];

fn service(rules: &CompiledComposeRules, def: &Value) -> Result<(), String> {
    let text = |key: &str| def.get(key).and_then(Value::scalar_text);
    if text("privileged").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")) {
        return Err("privileged".into());
    }
    if let Some(key) = REFUSED.iter().find(|k| def.get(k).is_some()) {
        return Err(format!("{key} is set"));
    }
    if let Some(key) = NAMESPACES.iter().find(|k| text(k).is_some_and(|v| v == "host")) {
        return Err(format!("{key}: host"));
    }
    match text("image") {
        Some(image) if rules.images.iter().any(|g| g.is_match(&image)) => {}
        Some(image) => return Err(format!("the image {image} is not among [policy.compose] images")),
        None => return Err("it names no image".into()),
    }
    let volumes = match def.get("volumes") {
        Some(Value::Seq(items)) => items.as_slice(),
        _ => &[],
    };
    for v in volumes {
        let source = match v {
            Value::Map(_) => v.get("source").and_then(Value::scalar_text).filter(|_| v.get("type").and_then(Value::scalar_text).is_none_or(|t| t == "bind")),
            other => other.scalar_text().and_then(|s| s.split_once(':').map(|(src, _)| src.to_owned())),
        };
        let Some(source) = source else { continue };
        // A named volume is a name; anything else is a path on the host.
        let named = source.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && source.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if named {
            continue;
        }
        let path = source.trim_end_matches('/');
        if path.contains("${") || path.split('/').any(|c| c == "..") || !rules.host_mounts.iter().any(|g| g.is_match(path)) {
            return Err(format!("the host path {source} is mounted, not among [policy.compose] host_mounts"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_reads_as_compose_does() {
        let env = parse_env("DOCKER_REPOSITORY=docker.canopsis.net/docker/\nCPS_EDITION='pro'\n# x\nEMPTY=\n");
        assert_eq!(interpolate("${DOCKER_REPOSITORY}${CPS_EDITION}/engine-che:$TAG", &env), "docker.canopsis.net/docker/pro/engine-che:${TAG}");
        assert_eq!(interpolate("$${X} ${EMPTY:-d} ${EMPTY-d} ${UNSET-x} ${CPS_EDITION:+y}", &env), "${X} d  ${UNSET} y");
    }

    fn rules() -> CompiledComposeRules {
        let r = ComposeRules { images: vec!["canopsis/*".into(), "redis:*".into()], host_mounts: vec!["./files/**".into()] };
        CompiledComposeRules::new(&r, "t").unwrap()
    }

    #[test]
    fn a_changed_service_is_judged_an_unchanged_one_is_not() {
        let env = BTreeMap::new();
        let base = "services:\n  redis:\n    image: redis:6\n  mine:\n    image: me/tool\n    privileged: true\n";
        assert_eq!(judge(&rules(), Some((base, &env)), (&base.replace("redis:6", "redis:7"), &env)), Ok(()));
        for (bad, why) in [
            ("    privileged: true\n", "privileged"),
            ("    cap_add: [SYS_ADMIN]\n", "cap_add"),
            ("    pid: host\n", "pid: host"),
            ("    volumes: ['/:/host']\n", "host path /"),
            ("    volumes: ['./files/../../etc:/x']\n", "host path"),
            ("    volumes: ['./files/${UNSET}:/x']\n", "host path"),
            ("    volumes: [{type: bind, source: /etc, target: /x}]\n", "host path /etc"),
            ("    extends: {file: compose.env, service: rooted}\n", "extends"),
        ] {
            let new = format!("{base}  evil:\n    image: canopsis/engine-che\n{bad}");
            let e = judge(&rules(), Some((base, &env)), (&new, &env)).unwrap_err();
            assert!(e.contains("service evil") && e.contains(why), "{bad}: {e}");
        }
        let other = format!("{base}  evil:\n    image: evil.io/root\n");
        assert!(judge(&rules(), Some((base, &env)), (&other, &env)).unwrap_err().contains("evil.io/root"));
        let ok = format!("{base}  fine:\n    image: canopsis/engine-che\n    volumes: ['./files/mongo/:/init', 'data:/data']\n");
        assert_eq!(judge(&rules(), Some((base, &env)), (&ok, &env)), Ok(()));
        let included = format!("{base}include: [compose.env]\n");
        assert!(judge(&rules(), Some((base, &env)), (&included, &env)).unwrap_err().contains("include"));
        let bound = format!("{base}volumes:\n  data:\n    driver_opts: {{type: none, o: bind, device: /}}\n");
        assert!(judge(&rules(), Some((base, &env)), (&bound, &env)).unwrap_err().contains("driver_opts"));
    }
}
