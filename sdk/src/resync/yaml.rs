//! YAML (Compose files), merged on the structure with `yaml-edit`, a lossless parser: the
//! operator's file is edited in place, so its comments, key order, quoting, flow or block
//! style and anchors stay wherever canup does not write. `yaml-edit` was chosen over
//! `serde_yaml` (unmaintained since 2024, and it rewrites the whole file) and `saphyr`
//! (a data model, no editing): it is the one maintained Rust library that edits YAML
//! losslessly (on rowan, rust-analyzer's syntax trees), it resolves anchors and merge keys for
//! the comparison, and it is plain Rust, so it builds for `wasm32-wasip2`.

use std::str::FromStr;

use yaml_edit::{Mapping, YamlFile};

use super::{Conflict, ResyncError, Resynced};

pub use canup_yaml::Value;

fn parse(text: &str, which: &'static str) -> Result<YamlFile, ResyncError> {
    YamlFile::from_str(text).map_err(|e| ResyncError::Parse { which, why: e.to_string() })
}

fn value_of(file: &YamlFile, which: &'static str) -> Result<Value, ResyncError> {
    canup_yaml::meaning(file).map_err(|why| ResyncError::Parse { which, why })
}

/// The meaning of a YAML text (anchors and merge keys resolved).
pub fn yaml_value(text: &str) -> Result<Value, ResyncError> {
    value_of(&parse(text, "YAML")?, "YAML")
}

/// The sequences whose order is their meaning: merged as one value.
fn ordered(key: &str) -> bool {
    matches!(key, "command" | "entrypoint" | "test" | "env_file")
}

fn is_scalar_seq(v: &Value) -> bool {
    matches!(v, Value::Seq(items) if items.iter().all(|i| !matches!(i, Value::Seq(_) | Value::Map(_))))
}

/// What identifies an item of a scalar list, where two items can say different things about
/// the same thing: a variable (`NAME=value` of `environment`, `labels`, `args`), a container
/// path (`volumes`), a container port (`ports`). Two items with one identity are one key: a
/// change on both sides is a conflict, not two items (Compose would take the last, or refuse
/// a path mounted twice).
fn item_identity(list: &str, item: &Value) -> Option<String> {
    let text = item.scalar_text()?;
    match list {
        "environment" | "labels" | "args" => Some(text.split_once('=').map_or(text.as_str(), |(k, _)| k).to_owned()),
        "volumes" => {
            let parts: Vec<&str> = text.split(':').collect();
            Some(parts.get(1).copied().unwrap_or(parts[0]).to_owned())
        }
        "ports" => Some(text.rsplit(':').next().unwrap_or(&text).split('/').next().unwrap_or(&text).to_owned()),
        _ => None,
    }
}

/// One change between the two references.
#[derive(Debug)]
enum Edit {
    /// Set `path` to `theirs` (it was `base`).
    Set {
        path: Vec<String>,
        base: Option<Value>,
        theirs: Value,
    },
    Remove {
        path: Vec<String>,
        base: Value,
    },
    /// A scalar sequence merged item by item.
    Items {
        path: Vec<String>,
        removed: Vec<Value>,
        added: Vec<Value>,
    },
}

fn diff(path: &mut Vec<String>, base: &Value, theirs: &Value, out: &mut Vec<Edit>) {
    match (base, theirs) {
        (Value::Map(b), Value::Map(t)) => {
            for (k, tv) in t {
                path.push(k.clone());
                match b.iter().find(|(bk, _)| bk == k) {
                    Some((_, bv)) => diff(path, bv, tv, out),
                    None => out.push(Edit::Set { path: path.clone(), base: None, theirs: tv.clone() }),
                }
                path.pop();
            }
            for (k, bv) in b {
                if !t.iter().any(|(tk, _)| tk == k) {
                    path.push(k.clone());
                    out.push(Edit::Remove { path: path.clone(), base: bv.clone() });
                    path.pop();
                }
            }
        }
        _ if base.same(theirs) => {}
        (Value::Seq(b), Value::Seq(t)) if is_scalar_seq(base) && is_scalar_seq(theirs) && !path.last().is_some_and(|k| ordered(k)) => {
            let removed = b.iter().filter(|x| !t.iter().any(|y| x.same(y))).cloned().collect();
            let added = t.iter().filter(|x| !b.iter().any(|y| x.same(y))).cloned().collect();
            out.push(Edit::Items { path: path.clone(), removed, added });
        }
        _ => out.push(Edit::Set { path: path.clone(), base: Some(base.clone()), theirs: theirs.clone() }),
    }
}

fn key_of(path: &[String]) -> String {
    path.join(".")
}

/// The mapping at `path` in the operator's file, as written there (not through an anchor).
fn mapping_at(file: &YamlFile, path: &[String]) -> Option<Mapping> {
    let mut m = file.document()?.as_mapping()?;
    for k in path {
        m = m.get_mapping(k.as_str())?;
    }
    Some(m)
}

/// A value as a node of its own document, for insertion into the operator's file.
fn node_of(v: &Value) -> Result<yaml_edit::YamlNode, String> {
    let text = Value::Map(vec![("v".into(), v.clone())]).to_yaml();
    let file = YamlFile::from_str(&text).map_err(|e| e.to_string())?;
    file.document().and_then(|d| d.as_mapping()).and_then(|m| m.get("v")).ok_or_else(|| format!("cannot build YAML for {}", v.show()))
}

/// A write the decisions settled on.
enum Write {
    Set { path: Vec<String>, base: Option<Value>, theirs: Value },
    Remove { path: Vec<String>, base: Value },
    Items { path: Vec<String>, remove: Vec<Value>, add: Vec<Value> },
}

/// What stops a resync before any write: a key both sides changed, or a change the
/// operator's file cannot take where it is written (through a YAML merge key or alias).
#[derive(Default)]
struct Stops {
    conflicts: Vec<Conflict>,
    unwritable: Vec<String>,
}

impl Stops {
    fn conflict(&mut self, path: &[String], mine: Option<&Value>, base: Option<&Value>, theirs: Option<&Value>) {
        self.conflicts.push(Conflict { key: key_of(path), ours: mine.map(Value::show), base: base.map(Value::show), theirs: theirs.map(Value::show) });
    }
}

/// Where an edit cannot be written in the operator's file: its parent is not a mapping written
/// there (it comes through a merge key or an alias), or a key to remove comes through one.
fn unwritable(file: &YamlFile, path: &[String], removing: bool) -> Option<String> {
    let (last, parent) = path.split_last()?;
    let Some(mapping) = mapping_at(file, parent) else {
        return Some(format!(
            "{}: the reference changes it, but {} is not written in your file (it comes from a YAML merge key `<<` or an alias); write {} out in full, then run canup again",
            key_of(path),
            key_of(parent),
            key_of(parent)
        ));
    };
    (removing && !mapping.contains_key(last.as_str())).then(|| {
        format!(
            "{}: the reference removes it, but in your file it comes from a YAML merge key `<<` under {}; remove it from the template (or stop merging it there), then run canup again",
            key_of(path),
            key_of(parent)
        )
    })
}

/// Where the operator removed a mapping the reference changes inside of: (the mapping's path).
fn removed_by_operator<'a>(path: &'a [String], base: &Value, ours: &Value) -> Option<&'a [String]> {
    (1..path.len()).map(|n| &path[..n]).find(|prefix| base.at(prefix).is_some() && ours.at(prefix).is_none())
}

/// Decides one scalar list: which of the operator's items go, which of the reference's come.
fn decide_items(path: &[String], removed: &[Value], added: &[Value], items: &[Value], base: Option<&Value>, stops: &mut Stops) -> Option<Write> {
    let list = path.last().map(String::as_str).unwrap_or_default();
    let identity = |v: &Value| item_identity(list, v);
    let same_identity = |a: &Value, b: &Value| identity(a).is_some() && identity(a) == identity(b);
    let mut remove: Vec<Value> = removed.iter().filter(|r| items.iter().any(|i| i.same(r))).cloned().collect();
    let mut add = Vec::new();
    for a in added {
        if items.iter().any(|i| i.same(a)) {
            continue;
        }
        // The operator's item for the same variable, path or port.
        match items.iter().find(|i| same_identity(i, a)) {
            Some(mine) if removed.iter().any(|r| r.same(mine)) => add.push(a.clone()),
            Some(mine) => {
                let was = match base {
                    Some(Value::Seq(b)) => b.iter().find(|b| same_identity(b, a)),
                    _ => None,
                };
                let mut at = path.to_vec();
                at.push(identity(a).unwrap_or_default());
                stops.conflict(&at, Some(mine), was, Some(a));
                remove.retain(|r| !same_identity(r, a));
            }
            None => add.push(a.clone()),
        }
    }
    // An item the reference drops that the operator changed (same identity, other value).
    for r in removed.iter().filter(|r| !added.iter().any(|a| same_identity(a, r))) {
        if let Some(mine) = items.iter().find(|i| same_identity(i, r) && !i.same(r)) {
            let mut at = path.to_vec();
            at.push(identity(r).unwrap_or_default());
            stops.conflict(&at, Some(mine), Some(r), None);
        }
    }
    (!remove.is_empty() || !add.is_empty()).then(|| Write::Items { path: path.to_vec(), remove, add })
}

/// Resyncs the operator's YAML `ours` from reference `base` to reference `theirs`.
pub fn yaml(base: &str, theirs: &str, ours: &str) -> Result<Resynced, ResyncError> {
    let base_v = value_of(&parse(base, "base reference")?, "base reference")?;
    let their_file = parse(theirs, "target reference")?;
    let their_v = value_of(&their_file, "target reference")?;
    let file = parse(ours, "operator's")?;
    let our_v = value_of(&file, "operator's")?;

    let mut edits = Vec::new();
    diff(&mut Vec::new(), &base_v, &their_v, &mut edits);

    // First every decision, then the writes: anything that stops the resync means no write.
    let mut stops = Stops::default();
    let mut writes = Vec::new();
    let mut not_applied = Vec::new();
    for edit in edits {
        let path = match &edit {
            Edit::Set { path, .. } | Edit::Remove { path, .. } | Edit::Items { path, .. } => path.clone(),
        };
        // A service (or any mapping) the operator removed stays removed.
        if let Some(gone) = removed_by_operator(&path, &base_v, &our_v) {
            not_applied.push(format!("{} (you removed {}; the reference's change to it is not applied)", key_of(&path), key_of(gone)));
            continue;
        }
        let write = match edit {
            Edit::Set { path, base, theirs } => {
                let mine = our_v.at(&path);
                if mine.is_some_and(|m| m.same(&theirs)) {
                    continue;
                }
                let unchanged = match (mine, &base) {
                    (None, None) => true,
                    (Some(m), Some(b)) => m.same(b),
                    _ => false,
                };
                if !unchanged {
                    stops.conflict(&path, mine, base.as_ref(), Some(&theirs));
                    continue;
                }
                Write::Set { path, base, theirs }
            }
            Edit::Remove { path, base } => match our_v.at(&path) {
                None => continue,
                Some(m) if m.same(&base) => Write::Remove { path, base },
                Some(m) => {
                    stops.conflict(&path, Some(m), Some(&base), None);
                    continue;
                }
            },
            Edit::Items { path, removed, added } => match our_v.at(&path) {
                Some(Value::Seq(items)) => match decide_items(&path, &removed, &added, items, base_v.at(&path), &mut stops) {
                    Some(w) => w,
                    None => continue,
                },
                mine => {
                    stops.conflict(&path, mine, base_v.at(&path), their_v.at(&path));
                    continue;
                }
            },
        };
        let (path, removing) = match &write {
            Write::Set { path, .. } | Write::Items { path, .. } => (path, false),
            Write::Remove { path, .. } => (path, true),
        };
        if let Some(why) = unwritable(&file, path, removing) {
            stops.unwritable.push(why);
            continue;
        }
        writes.push(write);
    }
    if !stops.conflicts.is_empty() {
        return Err(ResyncError::Conflicts(stops.conflicts));
    }
    if !stops.unwritable.is_empty() {
        return Err(ResyncError::Unwritable(stops.unwritable));
    }

    let mut applied = Vec::new();
    for write in &writes {
        let path = match write {
            Write::Set { path, .. } | Write::Remove { path, .. } | Write::Items { path, .. } => path,
        };
        let write_error = |why: String| ResyncError::Parse { which: "operator's", why: format!("{}: {why}", key_of(path)) };
        let (last, parent_path) = path.split_last().ok_or_else(|| write_error("the document itself differs in kind".into()))?;
        let parent = mapping_at(&file, parent_path).ok_or_else(|| write_error("not a mapping as written".into()))?;
        match write {
            Write::Set { base, theirs, .. } => {
                // The reference's own node keeps its key order and quoting; a node reached
                // through an anchor of the reference is rebuilt from its meaning.
                let node = match mapping_at(&their_file, parent_path).and_then(|m| m.get(last.as_str())) {
                    Some(n) if yaml_node_value(&n).is_some_and(|v| v.same(theirs)) => n,
                    _ => node_of(theirs).map_err(write_error)?,
                };
                parent.set(last.as_str(), node);
                // A key written twice (which the reading took as one) is written once now.
                while parent.find_all_entries_by_key(last.as_str()).count() > 1 {
                    parent.remove_nth_occurrence(last.as_str(), 1);
                }
                applied.push(format!("{}: {} → {}", key_of(path), base.as_ref().map_or("(absent)".into(), Value::show), theirs.show()));
            }
            Write::Remove { base, .. } => {
                while parent.remove(last.as_str()).is_some() {}
                applied.push(format!("{}: {} → (removed)", key_of(path), base.show()));
            }
            Write::Items { remove, add, .. } => {
                let seq = parent.get_sequence(last.as_str()).ok_or_else(|| write_error("not a sequence as written (an alias?)".into()))?;
                for r in remove {
                    while let Some(i) = seq.values().position(|n| yaml_node_value(&n).is_some_and(|v| v.same(r))) {
                        seq.remove(i);
                    }
                }
                for a in add {
                    seq.push(node_of(a).map_err(write_error)?);
                }
                let shown = |items: &[Value]| items.iter().map(Value::show).collect::<Vec<_>>().join(", ");
                applied.push(format!("{}: removed [{}], added [{}]", key_of(path), shown(remove), shown(add)));
            }
        }
    }

    let mut kept_edits = Vec::new();
    diff(&mut Vec::new(), &base_v, &our_v, &mut kept_edits);
    let mut kept: Vec<String> = kept_edits
        .iter()
        .filter_map(|e| match e {
            Edit::Set { path, theirs: mine, .. } if !their_v.at(path).is_some_and(|t| t.same(mine)) => Some(format!("{} = {}", key_of(path), mine.show())),
            Edit::Remove { path, .. } if their_v.at(path).is_some() => Some(format!("{} (you removed it)", key_of(path))),
            Edit::Items { path, removed, added } => {
                let theirs = their_v.at(path);
                let yours: Vec<String> =
                    added.iter().filter(|a| !matches!(theirs, Some(Value::Seq(t)) if t.iter().any(|x| x.same(a)))).map(Value::show).collect();
                let gone: Vec<String> =
                    removed.iter().filter(|r| matches!(theirs, Some(Value::Seq(t)) if t.iter().any(|x| x.same(r)))).map(Value::show).collect();
                (!yours.is_empty() || !gone.is_empty()).then(|| format!("{}: yours [{}], you removed [{}]", key_of(path), yours.join(", "), gone.join(", ")))
            }
            _ => None,
        })
        .collect();
    kept.extend(not_applied);
    let text = if applied.is_empty() { ours.to_owned() } else { file.to_string() };
    Ok(Resynced { text, applied, kept })
}

/// The meaning of one node of the operator's file (a sequence item).
fn yaml_node_value(node: &yaml_edit::YamlNode) -> Option<Value> {
    yaml_value(&format!("{node}\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
version: '2'
services:
  redis:
    image: redis:5.0.8-buster
    ports:
      - 6379:6379
  che:
    image: canopsis/engine-che:${CANOPSIS_IMAGE_TAG}
    command: /engine-che -alwaysFlushEntities
  heartbeat:
    image: canopsis/engine-heartbeat:${CANOPSIS_IMAGE_TAG}
volumes:
  mongodbdata:
";
    const THEIRS: &str = "\
version: '2'
services:
  redis:
    image: redis:5.0.8-buster
    ports:
      - 6379:6379
      - 16379:16379
  che:
    image: canopsis/engine-che:${CANOPSIS_IMAGE_TAG}
    command: /engine-che
  fifo:
    image: canopsis/engine-fifo:${CANOPSIS_IMAGE_TAG}
    command: /engine-fifo
    restart: unless-stopped
volumes:
  mongodbdata:
";

    fn value(text: &str) -> Value {
        yaml_value(text).unwrap()
    }

    #[test]
    fn reference_changes_are_applied_and_every_operator_change_is_kept() {
        let ours = "\
# Production site: do not edit without a ticket
version: '2'
services:
  redis:
    image: redis:5.0.8-buster
    ports:
      - 6380:6379   # moved: another redis on the host
      - 6379:6379
  che:
    image: canopsis/engine-che:${CANOPSIS_IMAGE_TAG}
    command: /engine-che -alwaysFlushEntities
    mem_limit: 2g
  heartbeat:
    image: canopsis/engine-heartbeat:${CANOPSIS_IMAGE_TAG}
  my-exporter:
    image: prom/exporter:1.0
volumes:
  mongodbdata:
  exporterdata:
";
        let r = yaml(BASE, THEIRS, ours).unwrap();
        let merged = value(&r.text);
        // The reference's changes.
        assert_eq!(merged.at(&["services".into(), "che".into(), "command".into()]).unwrap().show(), "/engine-che");
        assert!(merged.at(&["services".into(), "heartbeat".into()]).is_none());
        assert_eq!(merged.at(&["services".into(), "fifo".into(), "restart".into()]).unwrap().show(), "unless-stopped");
        // The operator's.
        assert_eq!(merged.at(&["services".into(), "redis".into(), "ports".into()]).unwrap().show(), "[6380:6379, 6379:6379, 16379:16379]");
        assert_eq!(merged.at(&["services".into(), "che".into(), "mem_limit".into()]).unwrap().show(), "2g");
        assert_eq!(merged.at(&["services".into(), "my-exporter".into(), "image".into()]).unwrap().show(), "prom/exporter:1.0");
        assert!(merged.at(&["volumes".into(), "exporterdata".into()]).is_some());
        // Their comments, untouched.
        assert!(r.text.starts_with("# Production site: do not edit without a ticket\n"), "{}", r.text);
        assert!(r.text.contains("- 6380:6379   # moved: another redis on the host"), "{}", r.text);
        // A service the reference added comes as the reference writes it (key order, quoting).
        assert!(r.text.contains("  fifo:\n    image: canopsis/engine-fifo:${CANOPSIS_IMAGE_TAG}\n    command: /engine-fifo\n"), "{}", r.text);
        assert_eq!(r.applied.len(), 4, "{:?}", r.applied);
        assert!(r.kept.iter().any(|k| k.starts_with("services.my-exporter")), "{:?}", r.kept);
        assert!(r.kept.iter().any(|k| k.starts_with("services.redis.ports: yours [6380:6379]")), "{:?}", r.kept);
        // Resyncing the result again changes nothing.
        let again = yaml(BASE, THEIRS, &r.text).unwrap();
        assert!(again.unchanged(), "{:?}", again.applied);
        assert_eq!(again.text, r.text);
    }

    #[test]
    fn a_key_both_sides_changed_stops_the_resync_with_the_three_values() {
        let ours = BASE.replace("command: /engine-che -alwaysFlushEntities", "command: /engine-che -alwaysFlushEntities -debug");
        let err = yaml(BASE, THEIRS, &ours).unwrap_err();
        let ResyncError::Conflicts(c) = &err else { panic!("{err}") };
        assert_eq!(
            c.as_slice(),
            [Conflict {
                key: "services.che.command".into(),
                ours: Some("/engine-che -alwaysFlushEntities -debug".into()),
                base: Some("/engine-che -alwaysFlushEntities".into()),
                theirs: Some("/engine-che".into()),
            }]
        );
        // A service the operator changed and the reference removed is a conflict too.
        let ours = BASE.replace("engine-heartbeat:${CANOPSIS_IMAGE_TAG}", "engine-heartbeat:custom");
        let ResyncError::Conflicts(c) = yaml(BASE, THEIRS, &ours).unwrap_err() else { panic!() };
        assert_eq!(c[0].key, "services.heartbeat");
        assert_eq!(c[0].theirs, None);
    }

    #[test]
    fn a_flow_style_file_is_merged() {
        let ours = "version: '2'\nservices: {redis: {image: 'redis:5.0.8-buster', ports: ['6379:6379']}, che: {image: 'canopsis/engine-che:${CANOPSIS_IMAGE_TAG}', command: /engine-che -alwaysFlushEntities}, heartbeat: {image: 'canopsis/engine-heartbeat:${CANOPSIS_IMAGE_TAG}'}}\nvolumes: {mongodbdata: }\n";
        let r = yaml(BASE, THEIRS, ours).unwrap();
        assert!(value(&r.text).same(&value(THEIRS)), "merged:\n{}", r.text);
    }

    #[test]
    fn services_built_on_anchors_compare_by_meaning() {
        let ours = "\
x-engine: &engine
  image: canopsis/engine-che:${CANOPSIS_IMAGE_TAG}
version: '2'
services:
  redis:
    image: redis:5.0.8-buster
    ports: [6379:6379]
  che:
    <<: *engine
    command: /engine-che -alwaysFlushEntities
  heartbeat:
    image: canopsis/engine-heartbeat:${CANOPSIS_IMAGE_TAG}
volumes:
  mongodbdata:
";
        let r = yaml(BASE, THEIRS, ours).unwrap();
        let merged = value(&r.text);
        assert_eq!(merged.at(&["services".into(), "che".into(), "image".into()]).unwrap().show(), "canopsis/engine-che:${CANOPSIS_IMAGE_TAG}");
        assert_eq!(merged.at(&["services".into(), "che".into(), "command".into()]).unwrap().show(), "/engine-che");
        assert!(r.text.contains("<<: *engine"), "{}", r.text);
        assert!(r.kept.iter().any(|k| k.starts_with("x-engine")), "{:?}", r.kept);
    }

    #[test]
    fn a_key_repeated_with_the_same_value_counts_once() {
        let text = "services:\n  a:\n    image: x\nvolumes:\n  dumpdata:\n  data:\n  dumpdata:\n";
        let v = value(text);
        assert_eq!(v.get("volumes").unwrap().show(), "{data: null, dumpdata: null}");
        // A repeat with another value stays an error, naming the key.
        let err = yaml_value("volumes:\n  dumpdata: {}\n  dumpdata:\n    driver: local\n").unwrap_err().to_string();
        assert!(err.contains("dumpdata"), "{err}");
        // And a file with a harmless repeat resyncs, keeping it as written.
        let r = yaml(text, &text.replace("image: x", "image: y"), text).unwrap();
        assert_eq!(r.text, text.replace("image: x", "image: y"));
    }

    #[test]
    fn list_items_with_one_name_are_one_key() {
        let base = "services:\n  s:\n    environment:\n      - TARGET=a\n      - X=1\n    ports:\n      - 8080:80\n";
        let theirs = "services:\n  s:\n    environment:\n      - TARGET=b\n      - X=1\n    ports:\n      - 8080:80\n";
        // The operator's own variable stays; the reference's new value replaces the old one.
        let r = yaml(base, theirs, &base.replace("      - X=1\n", "      - X=1\n      - MINE=1\n")).unwrap();
        assert_eq!(value(&r.text).at(&["services".into(), "s".into(), "environment".into()]).unwrap().show(), "[X=1, MINE=1, TARGET=b]");
        // Both changed TARGET: a conflict on that variable, not two TARGET items.
        let err = yaml(base, theirs, &base.replace("TARGET=a", "TARGET=mine")).unwrap_err();
        let ResyncError::Conflicts(c) = &err else { panic!("{err}") };
        assert_eq!(
            c[0],
            Conflict {
                key: "services.s.environment.TARGET".into(),
                ours: Some("TARGET=mine".into()),
                base: Some("TARGET=a".into()),
                theirs: Some("TARGET=b".into())
            }
        );
        // A port: the container side is its identity.
        let moved = "services:\n  s:\n    ports:\n      - 8081:80\n";
        let err = yaml("services:\n  s:\n    ports:\n      - 8080:80\n", "services:\n  s:\n    ports:\n      - 9090:80\n", moved).unwrap_err();
        assert!(err.to_string().contains("services.s.ports.80"), "{err}");
    }

    #[test]
    fn a_removal_through_a_merge_key_stops_before_any_write() {
        let base = "services:\n  che:\n    image: x\n    restart: always\n";
        let theirs = "services:\n  che:\n    image: x\n";
        let ours = "x-base: &base\n  restart: always\nservices:\n  che:\n    <<: *base\n    image: x\n";
        let err = yaml(base, theirs, ours).unwrap_err();
        assert!(matches!(err, ResyncError::Unwritable(_)), "{err}");
        assert!(err.to_string().contains("services.che.restart") && err.to_string().contains("merge key"), "{err}");
        // A change the merge key provides is written on the service itself, which wins.
        let theirs = "services:\n  che:\n    image: x\n    restart: unless-stopped\n";
        let r = yaml(base, theirs, ours).unwrap();
        assert!(r.text.contains("<<: *base"), "{}", r.text);
        assert_eq!(value(&r.text).at(&["services".into(), "che".into(), "restart".into()]).unwrap().show(), "unless-stopped");
        assert!(yaml(base, theirs, &r.text).unwrap().unchanged());
    }

    #[test]
    fn a_service_the_operator_removed_stays_removed() {
        let ours = BASE.replace("  heartbeat:\n    image: canopsis/engine-heartbeat:${CANOPSIS_IMAGE_TAG}\n", "");
        let theirs = THEIRS.replace("  fifo:", "  heartbeat:\n    image: canopsis/engine-heartbeat:new\n  fifo:");
        let base = BASE.to_owned();
        let r = yaml(&base, &theirs, &ours).unwrap();
        assert!(value(&r.text).at(&["services".into(), "heartbeat".into()]).is_none(), "{}", r.text);
        assert!(r.kept.iter().any(|k| k.contains("you removed services.heartbeat")), "{:?}", r.kept);
    }

    #[test]
    fn a_key_written_twice_is_written_once_when_the_reference_changes_it() {
        let base = "volumes:\n  dumpdata:\n  data:\n";
        let theirs = "volumes:\n  dumpdata:\n    driver: local\n  data:\n";
        let ours = "volumes:\n  dumpdata:\n  data:\n  dumpdata:\n";
        let r = yaml(base, theirs, ours).unwrap();
        assert_eq!(value(&r.text).get("volumes").unwrap().show(), "{data: null, dumpdata: {driver: local}}", "{}", r.text);
        assert_eq!(r.text.matches("dumpdata").count(), 1, "{}", r.text);
    }

    #[test]
    fn rendered_values_read_back_the_same() {
        let v = Value::Map(vec![
            ("image".into(), Value::Str("redis:${REDIS_TAG}".into())),
            ("command".into(), Value::Str("/bin/sh -c \"redis-server --requirepass $$REDIS_PASSWORD\"".into())),
            ("retries".into(), Value::Number("5".into())),
            ("tty".into(), Value::Bool(true)),
            ("version".into(), Value::Str("2".into())),
            ("empty".into(), Value::Null),
            ("test".into(), Value::Seq(vec![Value::Str("CMD-SHELL".into()), Value::Str("redis-cli ping | grep PONG".into())])),
            ("deploy".into(), Value::Seq(vec![Value::Map(vec![("a".into(), Value::Str("#x".into())), ("b".into(), Value::Str("no".into()))])])),
        ]);
        let text = v.to_yaml();
        let back = value(&text);
        assert!(back.same(&v), "{text}\n{back:?}");
        assert!(matches!(back.get("version"), Some(Value::Str(_))), "{text}");
        assert!(matches!(back.get("retries"), Some(Value::Number(_))), "{text}");
    }
}
