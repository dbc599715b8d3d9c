//! The meaning of a YAML text (Compose files): anchors and merge keys resolved, mapping order
//! kept, scalars as written. Shared by the step SDK's three-way resync (which edits the
//! operator's file in place with `yaml-edit` and compares meanings) and by canup's content
//! rules (which judge what a change to a Compose file makes Docker run as root): both must
//! read a file the same way, so one crate reads it for both.
//!
//! `yaml-edit` was chosen over `serde_yaml` (unmaintained since 2024) and `saphyr` (no
//! editing): it is the one maintained Rust library that edits YAML losslessly, it resolves
//! anchors and merge keys, and it is plain Rust, so it builds for `wasm32-wasip2` too.

use std::str::FromStr;

use yaml_edit::{Mapping, ScalarType, YamlFile, YamlValue};

/// A YAML value as the resync compares it and the content rules judge it: anchors and merge keys resolved, mapping order kept.
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

    pub fn scalar_text(&self) -> Option<String> {
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

    pub fn at(&self, path: &[String]) -> Option<&Value> {
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

/// The meaning of a parsed file; `Null` for an empty one.
pub fn meaning(file: &YamlFile) -> Result<Value, String> {
    let Some(doc) = file.document() else { return Ok(Value::Null) };
    match YamlValue::from_document(&doc) {
        Ok(v) => Ok(from_yaml_value(&v)),
        Err(first) => {
            // A key written twice with the same value means what it says once (the vendor's
            // 22.10.0-22.10.8 files declare the volume `dumpdata` twice, and operators keep
            // them). Read a copy without the repeats; a key repeated with different values
            // stays an error: which one Compose takes is not for canup to guess.
            let copy = YamlFile::from_str(&file.to_string()).map_err(|e| e.to_string())?;
            let Some(mapping) = copy.document().and_then(|d| d.as_mapping()) else { return Err(first.to_string()) };
            if !drop_repeated_keys(&mapping) {
                return Err(first.to_string());
            }
            let doc = copy.document().ok_or_else(|| first.to_string())?;
            YamlValue::from_document(&doc).map(|v| from_yaml_value(&v)).map_err(|e| e.to_string())
        }
    }
}

/// The meaning of a YAML text.
pub fn parse(text: &str) -> Result<Value, String> {
    meaning(&YamlFile::from_str(text).map_err(|e| e.to_string())?)
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
