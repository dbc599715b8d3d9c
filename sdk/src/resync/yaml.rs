//! YAML (Compose files), merged on the structure with `yaml-edit`, a lossless parser: the
//! operator's file is edited in place, so its comments, key order, quoting, flow or block
//! style and anchors stay wherever canup does not write. `yaml-edit` was chosen over
//! `serde_yaml` (unmaintained since 2024, and it rewrites the whole file) and `saphyr`
//! (a data model, no editing): it is the one maintained Rust library that edits YAML
//! losslessly (on rowan, rust-analyzer's syntax trees), it resolves anchors and merge keys for
//! the comparison, and it is plain Rust, so it builds for `wasm32-wasip2`.

use std::str::FromStr;

use yaml_edit::{Mapping, ScalarType, YamlFile, YamlValue};

use super::{Conflict, ResyncError, Resynced};

/// A YAML value as the merge compares it: anchors and merge keys resolved, mapping order kept.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer or a float, as written.
    Number(String),
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The same meaning: mapping order does not count, and a scalar is its text (`'5'` and
    /// `5` mean the same to Compose, and a quoting change is not an operator's change).
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Seq(a), Value::Seq(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
            (Value::Map(a), Value::Map(b)) => a.len() == b.len() && a.iter().all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v.same(v2))),
            (a, b) => match (a.scalar_text(), b.scalar_text()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) | Value::Str(n) => Some(n.clone()),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn at(&self, path: &[String]) -> Option<&Value> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    /// One line of text for messages.
    pub fn show(&self) -> String {
        match self {
            Value::Seq(items) => format!("[{}]", items.iter().map(Value::show).collect::<Vec<_>>().join(", ")),
            Value::Map(entries) => format!("{{{}}}", entries.iter().map(|(k, v)| format!("{k}: {}", v.show())).collect::<Vec<_>>().join(", ")),
            Value::Null => "null".into(),
            other => other.scalar_text().unwrap_or_default(),
        }
    }

    /// Block-style YAML, keys in order; strings quoted wherever YAML would read them as
    /// something else.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        self.write_block(&mut out, 0);
        out
    }

    fn write_block(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Value::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    out.push_str(&format!("{pad}{}:", scalar_yaml(k)));
                    v.write_after_key(out, indent);
                }
            }
            Value::Seq(items) if !items.is_empty() => {
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    match item {
                        Value::Map(entries) if !entries.is_empty() => {
                            // The first key on the dash's line, the others under it.
                            let mut inner = String::new();
                            item.write_block(&mut inner, indent + 2);
                            out.push(' ');
                            out.push_str(inner.trim_start());
                        }
                        _ => item.write_after_key(out, indent),
                    }
                }
            }
            scalar => out.push_str(&format!("{pad}{}\n", scalar.inline())),
        }
    }

    fn write_after_key(&self, out: &mut String, indent: usize) {
        match self {
            Value::Map(e) if !e.is_empty() => {
                out.push('\n');
                self.write_block(out, indent + 2);
            }
            Value::Seq(i) if !i.is_empty() => {
                out.push('\n');
                self.write_block(out, indent + 2);
            }
            Value::Null => out.push('\n'),
            other => out.push_str(&format!(" {}\n", other.inline())),
        }
    }

    fn inline(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.clone(),
            Value::Str(s) => scalar_yaml(s),
            Value::Seq(_) => "[]".into(),
            Value::Map(_) => "{}".into(),
        }
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string, else
/// double-quoted (Compose files hold `$`, `:` and `#` often).
fn scalar_yaml(s: &str) -> String {
    let reserved =
        ["", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "no", "No", "on", "On", "off", "Off", "y", "n"];
    let looks_numeric = s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o");
    let special_start = s.starts_with(|c: char| "!&*-?:,[]{}#|>@`\"'% ".contains(c));
    let plain = !reserved.contains(&s)
        && !looks_numeric
        && !special_start
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(':')
        && !s.contains(|c: char| c.is_control());
    if plain {
        return s.to_owned();
    }
    let mut q = String::from('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn from_yaml_value(v: &YamlValue) -> Value {
    match v {
        YamlValue::Scalar(s) => match s.scalar_type() {
            ScalarType::Null => Value::Null,
            ScalarType::Boolean => Value::Bool(s.to_bool().unwrap_or(false)),
            ScalarType::Integer | ScalarType::Float => Value::Number(s.value().to_owned()),
            _ => Value::Str(s.value().to_owned()),
        },
        YamlValue::Sequence(items) => Value::Seq(items.iter().map(from_yaml_value).collect()),
        YamlValue::Set(items) => Value::Seq(items.iter().map(|s| Value::Str(s.clone())).collect()),
        YamlValue::Mapping(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), from_yaml_value(v))).collect()),
        YamlValue::OrderedMapping(m) | YamlValue::Pairs(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), from_yaml_value(v))).collect()),
        YamlValue::Tagged(_, inner) => from_yaml_value(inner),
    }
}

fn parse(text: &str, which: &'static str) -> Result<YamlFile, ResyncError> {
    YamlFile::from_str(text).map_err(|e| ResyncError::Parse { which, why: e.to_string() })
}

fn value_of(file: &YamlFile, which: &'static str) -> Result<Value, ResyncError> {
    let Some(doc) = file.document() else { return Ok(Value::Null) };
    match YamlValue::from_document(&doc) {
        Ok(v) => Ok(from_yaml_value(&v)),
        Err(first) => {
            // A key written twice with the same value means what it says once (the vendor's
            // 22.10.0-22.10.8 files declare the volume `dumpdata` twice, and operators keep
            // them). Read a copy without the repeats; a key repeated with different values
            // stays an error: which one Compose takes is not for canup to guess.
            let copy = YamlFile::from_str(&file.to_string()).map_err(|e| ResyncError::Parse { which, why: e.to_string() })?;
            let Some(mapping) = copy.document().and_then(|d| d.as_mapping()) else {
                return Err(ResyncError::Parse { which, why: first.to_string() });
            };
            if !drop_repeated_keys(&mapping) {
                return Err(ResyncError::Parse { which, why: first.to_string() });
            }
            let doc = copy.document().ok_or_else(|| ResyncError::Parse { which, why: first.to_string() })?;
            YamlValue::from_document(&doc).map(|v| from_yaml_value(&v)).map_err(|e| ResyncError::Parse { which, why: e.to_string() })
        }
    }
}

/// Removes, in `mapping` and the mappings under it, every later entry that repeats an earlier
/// one's key and value; true when any was removed.
fn drop_repeated_keys(mapping: &Mapping) -> bool {
    let mut dropped = false;
    let entries: Vec<_> = mapping.entries().collect();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut repeats: Vec<(String, usize)> = Vec::new();
    for e in &entries {
        let key = e.key_node().map(|k| k.to_string().trim().to_owned()).unwrap_or_default();
        let value = e.value_node().map(|v| v.to_string().trim().to_owned()).unwrap_or_default();
        let n = seen.iter().filter(|(k, _)| *k == key).count();
        if seen.iter().any(|(k, v)| *k == key && *v == value) {
            repeats.push((key.clone(), n));
        }
        seen.push((key, value));
        if let Some(inner) = e.value_node().and_then(|v| v.as_mapping().cloned()) {
            dropped |= drop_repeated_keys(&inner);
        }
    }
    // Later occurrences first, so that the earlier indexes still hold.
    for (key, n) in repeats.into_iter().rev() {
        dropped |= mapping.remove_nth_occurrence(key.as_str(), n).is_some();
    }
    dropped
}

/// The meaning of a YAML text (anchors and merge keys resolved).
pub fn yaml_value(text: &str) -> Result<Value, ResyncError> {
    value_of(&parse(text, "YAML")?, "YAML")
}

/// The sequences whose order is their meaning: merged as one value.
fn ordered(key: &str) -> bool {
    matches!(key, "command" | "entrypoint" | "test" | "env_file" | "args")
}

fn is_scalar_seq(v: &Value) -> bool {
    matches!(v, Value::Seq(items) if items.iter().all(|i| !matches!(i, Value::Seq(_) | Value::Map(_))))
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
    /// A scalar sequence merged as a set.
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

/// Resyncs the operator's YAML `ours` from reference `base` to reference `theirs`.
pub fn yaml(base: &str, theirs: &str, ours: &str) -> Result<Resynced, ResyncError> {
    let base_v = value_of(&parse(base, "base reference")?, "base reference")?;
    let their_file = parse(theirs, "target reference")?;
    let their_v = value_of(&their_file, "target reference")?;
    let file = parse(ours, "operator's")?;
    let our_v = value_of(&file, "operator's")?;

    let mut edits = Vec::new();
    diff(&mut Vec::new(), &base_v, &their_v, &mut edits);

    // First every decision, then the writes: a conflict anywhere means no write at all.
    let mut conflicts = Vec::new();
    let mut todo = Vec::new();
    for edit in edits {
        let conflict = |path: &[String], mine: Option<&Value>, base: Option<&Value>, theirs: Option<&Value>| Conflict {
            key: key_of(path),
            ours: mine.map(Value::show),
            base: base.map(Value::show),
            theirs: theirs.map(Value::show),
        };
        match &edit {
            Edit::Set { path, base, theirs } => {
                let mine = our_v.at(path);
                let unchanged = match (mine, base) {
                    (None, None) => true,
                    (Some(m), Some(b)) => m.same(b),
                    _ => false,
                };
                if mine.is_some_and(|m| m.same(theirs)) {
                    continue;
                }
                if !unchanged {
                    conflicts.push(conflict(path, mine, base.as_ref(), Some(theirs)));
                    continue;
                }
            }
            Edit::Remove { path, base } => match our_v.at(path) {
                None => continue,
                Some(m) if m.same(base) => {}
                Some(m) => {
                    conflicts.push(conflict(path, Some(m), Some(base), None));
                    continue;
                }
            },
            Edit::Items { path, removed, added } => match our_v.at(path) {
                Some(Value::Seq(items)) => {
                    let to_remove = removed.iter().any(|r| items.iter().any(|i| i.same(r)));
                    let to_add = added.iter().any(|a| !items.iter().any(|i| i.same(a)));
                    if !to_remove && !to_add {
                        continue;
                    }
                }
                mine => {
                    let base = base_v.at(path);
                    conflicts.push(conflict(path, mine, base, their_v.at(path)));
                    continue;
                }
            },
        }
        todo.push(edit);
    }
    if !conflicts.is_empty() {
        return Err(ResyncError::Conflicts(conflicts));
    }

    let mut applied = Vec::new();
    for edit in &todo {
        let path = match edit {
            Edit::Set { path, .. } | Edit::Remove { path, .. } | Edit::Items { path, .. } => path,
        };
        let (last, parent_path) =
            path.split_last().ok_or_else(|| ResyncError::Parse { which: "operator's", why: "the document itself differs in kind".into() })?;
        let parent = mapping_at(&file, parent_path).ok_or_else(|| {
            ResyncError::Conflicts(vec![Conflict {
                key: key_of(path),
                ours: Some(format!("{} comes from an anchor or alias, which canup does not rewrite", key_of(parent_path))),
                base: base_v.at(path).map(Value::show),
                theirs: their_v.at(path).map(Value::show),
            }])
        })?;
        let write_error = |why: String| ResyncError::Parse { which: "operator's", why: format!("{}: {why}", key_of(path)) };
        match edit {
            Edit::Set { base, theirs, .. } => {
                // The reference's own node keeps its key order and quoting; a node reached
                // through an anchor of the reference is rebuilt from its meaning.
                let node = match mapping_at(&their_file, parent_path).and_then(|m| m.get(last.as_str())) {
                    Some(n) if yaml_node_value(&n).is_some_and(|v| v.same(theirs)) => n,
                    _ => node_of(theirs).map_err(write_error)?,
                };
                parent.set(last.as_str(), node);
                applied.push(format!("{}: {} → {}", key_of(path), base.as_ref().map_or("(absent)".into(), Value::show), theirs.show()));
            }
            Edit::Remove { base, .. } => {
                parent.remove(last.as_str());
                applied.push(format!("{}: {} → (removed)", key_of(path), base.show()));
            }
            Edit::Items { removed, added, .. } => {
                let seq = parent.get_sequence(last.as_str()).ok_or_else(|| write_error("not a sequence as written (an alias?)".into()))?;
                for r in removed {
                    while let Some(i) = seq.values().position(|n| yaml_node_value(&n).is_some_and(|v| v.same(r))) {
                        seq.remove(i);
                    }
                }
                let now: Vec<Value> = seq.values().filter_map(|n| yaml_node_value(&n)).collect();
                for a in added {
                    if !now.iter().any(|v| v.same(a)) {
                        seq.push(node_of(a).map_err(write_error)?);
                    }
                }
                let shown = |items: &[Value]| items.iter().map(Value::show).collect::<Vec<_>>().join(", ");
                applied.push(format!("{}: removed [{}], added [{}]", key_of(path), shown(removed), shown(added)));
            }
        }
    }

    let mut kept_edits = Vec::new();
    diff(&mut Vec::new(), &base_v, &our_v, &mut kept_edits);
    let kept = kept_edits
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
