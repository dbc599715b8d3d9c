//! The vendor's reference Compose files (`facts/compose.toml`), and the reference set of a
//! release rendered from them: the Compose YAML and its dotenv files, as the vendor's tag has
//! them in meaning (not byte for byte: comments are not facts, and a regenerated file is not a
//! copy).
//!
//! The Compose resync takes two of these, the installed release's (base) and the target's
//! (theirs), and the operator's files (ours); the simulated host starts from one; vendor-check
//! compares each with the vendor's tag.

use canup_sdk::resync::Value;
use toml_edit::{DocumentMut, Item, Table};

use crate::version::{Version, covers};

/// Where a fact comes from: a file of the vendor's tag, or the notes and guides (`basis`).
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub source: Option<String>,
    pub basis: Option<String>,
}

impl Origin {
    /// A fact no file of the vendor states (Pro's files are not public, 3.x has no tag): its
    /// basis says `inferred` and names the note or guide it comes from.
    pub fn inferred(&self) -> bool {
        self.source.is_none() && self.basis.as_deref().is_some_and(|b| b.contains("inferred"))
    }
}

#[derive(Debug, Clone)]
struct Ranged<T> {
    editions: Vec<String>,
    from: String,
    to: String,
    origin: Origin,
    fact: T,
}

impl<T> Ranged<T> {
    fn holds(&self, release: &str, edition: &str) -> bool {
        self.editions.iter().any(|e| e == edition) && covers(&self.from, &self.to, release)
    }
}

/// Which files make up an edition's reference set, and how the era's update guide runs Compose.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The directory of the vendor's tag that holds the files (none: no tag has them).
    pub vendor_dir: Option<String>,
    pub compose_file: String,
    /// The dotenv-style files, in the vendor's order.
    pub env_files: Vec<String>,
    /// The file's top-level `version:` (none from 22.10: the Compose specification).
    pub yaml_version: Option<String>,
    /// `docker-compose up -d` (v1) or `docker compose up -d` (v2), as the update guide says.
    pub command: Vec<String>,
    /// `CPS_EDITION` of the edition, where the era has one.
    pub cps_edition: Option<String>,
}

#[derive(Debug, Clone)]
struct EnvFile {
    file: String,
    separator: char,
    vars: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Named {
    name: String,
    definition: Value,
}

/// Every Compose fact.
#[derive(Debug, Clone, Default)]
pub struct ComposeFacts {
    layouts: Vec<Ranged<Layout>>,
    envs: Vec<Ranged<EnvFile>>,
    volumes: Vec<Ranged<Named>>,
    services: Vec<Ranged<Named>>,
}

/// A release's reference set for one edition.
#[derive(Debug, Clone)]
pub struct Reference {
    pub release: String,
    pub edition: String,
    pub layout: Layout,
    /// The Compose file's meaning.
    pub compose: Value,
    /// (file name, the values in order) of each dotenv file, `{version}` replaced.
    pub env: Vec<(String, Vec<(String, String)>)>,
    /// (file name, text): the Compose file, then the dotenv files.
    pub files: Vec<(String, String)>,
    /// What canup could not know: the facts of this set that are inferred, with their basis.
    pub inferred: Vec<String>,
    /// Every fact of the set with where it comes from: (what, origin).
    pub origins: Vec<(String, Origin)>,
}

fn text(t: &Table, key: &str, what: &str) -> Result<String, String> {
    t.get(key).and_then(Item::as_str).map(str::to_owned).ok_or_else(|| format!("{what}: `{key}` is missing or not a string"))
}

fn texts(t: &Table, key: &str, what: &str) -> Result<Vec<String>, String> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(item) => item
            .as_array()
            .ok_or_else(|| format!("{what}: `{key}` is not an array"))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{what}: `{key}` holds a non-string")))
            .collect(),
    }
}

fn optional(t: &Table, key: &str) -> Option<String> {
    t.get(key).and_then(Item::as_str).map(str::to_owned)
}

/// A TOML value as the YAML value it states.
fn value_of_toml(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::Str(s.value().clone()),
        T::Integer(i) => Value::Number(i.value().to_string()),
        T::Float(f) => Value::Number(f.value().to_string()),
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::Str(d.value().to_string()),
        T::Array(a) => Value::Seq(a.iter().map(value_of_toml).collect()),
        T::InlineTable(t) => Value::Map(t.iter().map(|(k, v)| (k.to_owned(), value_of_toml(v))).collect()),
    }
}

fn value_of_item(item: &Item) -> Value {
    match item {
        Item::Value(v) => value_of_toml(v),
        Item::Table(t) => Value::Map(t.iter().map(|(k, v)| (k.to_owned(), value_of_item(v))).collect()),
        Item::ArrayOfTables(a) => Value::Seq(a.iter().map(|t| value_of_item(&Item::Table(t.clone()))).collect()),
        Item::None => Value::Null,
    }
}

/// Writes a YAML null at the dotted `path` of a definition (TOML has no null).
fn set_null(v: &mut Value, path: &[&str]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    let Value::Map(entries) = v else { return false };
    let Some((_, inner)) = entries.iter_mut().find(|(k, _)| k == first) else { return false };
    if rest.is_empty() {
        *inner = Value::Null;
        true
    } else {
        set_null(inner, rest)
    }
}

fn replace_version(v: &Value, release: &str) -> Value {
    match v {
        Value::Str(s) => Value::Str(s.replace("{version}", release)),
        Value::Seq(items) => Value::Seq(items.iter().map(|i| replace_version(i, release)).collect()),
        Value::Map(entries) => Value::Map(entries.iter().map(|(k, v)| (k.clone(), replace_version(v, release))).collect()),
        other => other.clone(),
    }
}

impl ComposeFacts {
    /// The facts shipped in this crate.
    pub fn embedded() -> Result<Self, String> {
        Self::parse(crate::COMPOSE_TOML, "facts/compose.toml")
    }

    /// Parses a facts file (`name` for messages).
    pub fn parse(text_of_file: &str, name: &str) -> Result<Self, String> {
        let doc: DocumentMut = text_of_file.parse().map_err(|e| format!("{name}: {e}"))?;
        let mut facts = ComposeFacts::default();
        let entries = |kind: &str| -> Vec<Table> { doc.get(kind).and_then(Item::as_array_of_tables).map(|a| a.iter().cloned().collect()).unwrap_or_default() };
        let ranged = |t: &Table, what: &str| -> Result<(Vec<String>, String, String, Origin), String> {
            let (from, to) = (text(t, "from", what)?, text(t, "to", what)?);
            let (f, l) = (Version::parse(&from)?, Version::parse(&to)?);
            if f > l {
                return Err(format!("{what}: the range {from}..={to} is empty"));
            }
            let origin = Origin { source: optional(t, "source"), basis: optional(t, "basis") };
            if origin.source.is_none() && origin.basis.is_none() {
                return Err(format!("{what}: a fact needs a `source` (a file of the vendor's tag) or a `basis`"));
            }
            let editions = texts(t, "editions", what)?;
            if editions.is_empty() || editions.iter().any(|e| e != "core" && e != "cat") {
                return Err(format!("{what}: `editions` must list \"core\" and/or \"cat\""));
            }
            Ok((editions, from, to, origin))
        };
        for (i, t) in entries("layout").iter().enumerate() {
            let what = format!("{name}: layout #{}", i + 1);
            let (editions, from, to, origin) = ranged(t, &what)?;
            let fact = Layout {
                vendor_dir: optional(t, "vendor_dir"),
                compose_file: text(t, "compose_file", &what)?,
                env_files: texts(t, "env_files", &what)?,
                yaml_version: optional(t, "yaml_version"),
                command: texts(t, "command", &what)?,
                cps_edition: optional(t, "cps_edition"),
            };
            facts.layouts.push(Ranged { editions, from, to, origin, fact });
        }
        for (i, t) in entries("env").iter().enumerate() {
            let what = format!("{name}: env #{}", i + 1);
            let (editions, from, to, origin) = ranged(t, &what)?;
            let vars = t
                .get("vars")
                .and_then(Item::as_array)
                .ok_or_else(|| format!("{what}: `vars` is missing"))?
                .iter()
                .map(|pair| match pair.as_array().map(|p| p.iter().map(|x| x.as_str()).collect::<Vec<_>>()).as_deref() {
                    Some([Some(k), Some(v)]) => Ok(((*k).to_owned(), (*v).to_owned())),
                    _ => Err(format!("{what}: each of `vars` is [\"KEY\", \"value\"]")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let separator = match optional(t, "separator").as_deref() {
                None | Some("=") => '=',
                Some(":") => ':',
                Some(other) => return Err(format!("{what}: separator {other:?} is neither \"=\" nor \":\"")),
            };
            facts.envs.push(Ranged { editions, from, to, origin, fact: EnvFile { file: text(t, "file", &what)?, separator, vars } });
        }
        for (kind, list) in [("volume", &mut facts.volumes), ("service", &mut facts.services)] {
            for (i, t) in entries(kind).iter().enumerate() {
                let name_of = text(t, "name", &format!("{name}: {kind} #{}", i + 1))?;
                let what = format!("{name}: {kind} {name_of}");
                let (editions, from, to, origin) = ranged(t, &what)?;
                let mut definition = t.get("definition").map_or(Value::Null, value_of_item);
                for path in texts(t, "nulls", &what)? {
                    if !set_null(&mut definition, &path.split('.').collect::<Vec<_>>()) {
                        return Err(format!("{what}: `nulls` names {path}, which the definition does not have"));
                    }
                }
                list.push(Ranged { editions, from, to, origin, fact: Named { name: name_of, definition } });
            }
        }
        Ok(facts)
    }

    /// The reference set of `release` for `edition` (`core`/`cat`).
    pub fn reference(&self, release: &str, edition: &str) -> Result<Reference, String> {
        let one = |found: Vec<&Ranged<Layout>>| -> Result<Ranged<Layout>, String> {
            match found.as_slice() {
                [l] => Ok((*l).clone()),
                [] => {
                    Err(format!("the Compose facts have no reference files for Canopsis {release} ({edition}); add them to facts/compose.toml (docs/facts.md)"))
                }
                _ => Err(format!("the Compose facts have {} layouts for Canopsis {release} ({edition}): ranges overlap", found.len())),
            }
        };
        let layout = one(self.layouts.iter().filter(|l| l.holds(release, edition)).collect())?;
        let mut origins = vec![(format!("layout ({})", layout.fact.compose_file), layout.origin.clone())];

        let mut env = Vec::new();
        let mut files = Vec::new();
        for file in &layout.fact.env_files {
            let found: Vec<_> = self.envs.iter().filter(|e| e.fact.file == *file && e.holds(release, edition)).collect();
            let [e] = found.as_slice() else {
                return Err(format!("the Compose facts have {} entries for {file} of Canopsis {release} ({edition}); exactly one is needed", found.len()));
            };
            let vars: Vec<(String, String)> = e.fact.vars.iter().map(|(k, v)| (k.clone(), v.replace("{version}", release))).collect();
            let body: String = vars.iter().map(|(k, v)| format!("{k}{}{v}\n", e.fact.separator)).collect();
            files.push((file.clone(), body));
            env.push((file.clone(), vars));
            origins.push((file.clone(), e.origin.clone()));
        }

        let mut top = Vec::new();
        if let Some(v) = &layout.fact.yaml_version {
            top.push(("version".to_owned(), Value::Str(v.clone())));
        }
        let mut pick = |list: &[Ranged<Named>], kind: &str| -> Result<Vec<(String, Value)>, String> {
            let mut out: Vec<(String, Value)> = Vec::new();
            for n in list.iter().filter(|n| n.holds(release, edition)) {
                if out.iter().any(|(k, _)| *k == n.fact.name) {
                    return Err(format!("the Compose facts have two {kind} entries {} for Canopsis {release} ({edition}): ranges overlap", n.fact.name));
                }
                out.push((n.fact.name.clone(), replace_version(&n.fact.definition, release)));
                origins.push((format!("{kind} {}", n.fact.name), n.origin.clone()));
            }
            Ok(out)
        };
        let services = pick(&self.services, "service")?;
        let volumes = pick(&self.volumes, "volume")?;
        top.push(("services".to_owned(), Value::Map(services)));
        if !volumes.is_empty() {
            top.push(("volumes".to_owned(), Value::Map(volumes)));
        }
        let compose = Value::Map(top);
        files.insert(0, (layout.fact.compose_file.clone(), compose.to_yaml()));
        let inferred = origins.iter().filter(|(_, o)| o.inferred()).map(|(what, o)| format!("{what}: {}", o.basis.as_deref().unwrap_or_default())).collect();
        Ok(Reference { release: release.to_owned(), edition: edition.to_owned(), layout: layout.fact, compose, env, files, inferred, origins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS: &str = r#"
[[layout]]
editions = ["core", "cat"]
from = "4.5.0"
to = "4.6.3"
vendor_dir = "community/docker-compose"
compose_file = "docker-compose.yml"
env_files = [".env", "compose.mongo.env"]
yaml_version = "2"
command = ["docker-compose", "up", "-d"]
source = "community/docker-compose"

[[env]]
editions = ["core", "cat"]
file = ".env"
from = "4.5.0"
to = "4.6.3"
vars = [["CANOPSIS_IMAGE_TAG", "{version}"], ["REDIS_TAG", "5.0.8-buster"]]
source = "community/docker-compose/.env"

[[env]]
editions = ["core", "cat"]
file = "compose.mongo.env"
separator = ":"
from = "4.5.0"
to = "4.6.3"
vars = [["MONGO_INITDB_ROOT_USERNAME", "root"]]
source = "community/docker-compose/compose.mongo.env"

[[volume]]
editions = ["core", "cat"]
name = "mongodbdata"
from = "4.5.0"
to = "4.6.3"
source = "community/docker-compose/docker-compose.yml"

[[service]]
editions = ["core", "cat"]
name = "redis"
from = "4.5.0"
to = "4.6.3"
source = "community/docker-compose/docker-compose.yml"
[service.definition]
image = "redis:${REDIS_TAG}"
ports = ["6379:6379"]
[service.definition.healthcheck]
test = ["CMD", "redis-cli", "ping"]
retries = 5

[[service]]
editions = ["cat"]
name = "webhook"
from = "4.5.0"
to = "4.6.3"
basis = "inferred: the 4.5.0 Pro installation guide lists engine-webhook"
nulls = ["labels"]
[service.definition]
image = "docker.canopsis.net/docker/pro/engine-webhook:${CANOPSIS_IMAGE_TAG}"
labels = ""
"#;

    #[test]
    fn a_release_reference_is_rendered_from_its_facts() {
        let facts = ComposeFacts::parse(FACTS, "test").unwrap();
        let core = facts.reference("4.5.5", "core").unwrap();
        assert_eq!(core.files[1], (".env".to_owned(), "CANOPSIS_IMAGE_TAG=4.5.5\nREDIS_TAG=5.0.8-buster\n".to_owned()));
        assert_eq!(core.files[2].1, "MONGO_INITDB_ROOT_USERNAME:root\n");
        let yaml = canup_sdk::resync::yaml_value(&core.files[0].1).unwrap();
        assert!(yaml.same(&core.compose), "{}", core.files[0].1);
        assert_eq!(yaml.get("version").unwrap().show(), "2");
        assert!(core.compose.get("services").unwrap().get("webhook").is_none());
        assert!(core.inferred.is_empty());

        let pro = facts.reference("4.6.0", "cat").unwrap();
        let webhook = pro.compose.get("services").unwrap().get("webhook").unwrap();
        assert!(matches!(webhook.get("labels"), Some(Value::Null)));
        assert_eq!(pro.inferred, ["service webhook: inferred: the 4.5.0 Pro installation guide lists engine-webhook"]);
    }

    #[test]
    fn a_release_without_facts_names_the_file_to_add_them_to() {
        let facts = ComposeFacts::parse(FACTS, "test").unwrap();
        let err = facts.reference("22.10.0", "core").unwrap_err();
        assert!(err.contains("no reference files for Canopsis 22.10.0 (core)") && err.contains("facts/compose.toml"), "{err}");
    }

    #[test]
    fn a_fact_without_source_or_basis_is_refused() {
        let err = ComposeFacts::parse(&FACTS.replace("source = \"community/docker-compose/.env\"", ""), "test").unwrap_err();
        assert!(err.contains("env #1") && err.contains("`source`"), "{err}");
    }
}
