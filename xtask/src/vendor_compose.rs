//! The Compose part of `cargo xtask vendor-check`: each tag's reference Compose files against
//! the reference set rendered from `facts/compose.toml`, compared in meaning (anchors and
//! merge keys resolved, the `x-` templates folded into the services that merge them), both
//! ways: every service, volume and variable of the tag must be in the facts with the same
//! definition, and every one of the facts must be in the tag.

use anyhow::Result;
use canopsis_facts::compose::ComposeFacts;
use canup_sdk::resync::{Value, env_entries, yaml_value};

use crate::vendor_check::Vendor;

/// Where the meanings differ, as `path: facts say …, the tag says …` lines.
fn differences(path: &str, facts: Option<&Value>, tag: Option<&Value>, out: &mut Vec<String>) {
    match (facts, tag) {
        (Some(Value::Map(f)), Some(Value::Map(t))) => {
            for (k, v) in f {
                differences(&format!("{path}.{k}"), Some(v), t.iter().find(|(tk, _)| tk == k).map(|(_, v)| v), out);
            }
            for (k, v) in t.iter().filter(|(k, _)| !f.iter().any(|(fk, _)| fk == k)) {
                differences(&format!("{path}.{k}"), None, Some(v), out);
            }
        }
        (Some(f), Some(t)) if f.same(t) => {}
        (f, t) => {
            let shown = |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), |v| format!("`{}`", v.show()));
            out.push(format!("{path}: the facts say {}, the tag says {}", shown(f), shown(t)));
        }
    }
}

/// The tag's Compose file without its templates (`x-…` keys, which the services merge).
fn without_templates(v: Value) -> Value {
    match v {
        Value::Map(entries) => Value::Map(entries.into_iter().filter(|(k, _)| !k.starts_with("x-")).collect()),
        other => other,
    }
}

/// Checks `tag` for every edition whose layout names a source: (facts checked, disagreements).
pub fn check_tag(vendor: &Vendor, facts: &ComposeFacts, tag: &str) -> Result<(usize, Vec<String>)> {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for edition in ["core", "cat"] {
        let Ok(reference) = facts.reference(tag, edition) else {
            if edition == "core" {
                wrong.push(format!("the Compose facts have no Community reference set for {tag}"));
            }
            continue;
        };
        // Only the facts that name a file of the tag are checked against it; Pro's are inferred.
        let Some(dir) = reference.layout.vendor_dir.clone() else { continue };
        let from_tag = |what: &str| reference.origins.iter().any(|(w, o)| w == what && o.source.is_some());
        let files = vendor.list(tag, &dir)?;
        for (name, _) in &reference.files {
            checked += 1;
            if !files.contains(name) {
                wrong.push(format!("{dir}/{name} ({edition}) is not in the tag"));
            }
        }
        // The Compose file.
        let compose_path = format!("{dir}/{}", reference.layout.compose_file);
        if let Some(text) = vendor.file(tag, &compose_path)? {
            match yaml_value(&text) {
                Ok(tag_value) => {
                    let tag_value = without_templates(tag_value);
                    let (mut stated, mut found) = (reference.compose.clone(), tag_value);
                    // Pro adds to the Community file: compare only what the tag can say.
                    if edition == "cat" {
                        stated = only_sourced(&stated, &reference.origins);
                        found = keep_keys_of(&found, &stated);
                    }
                    checked += count_entries(&stated);
                    let mut out = Vec::new();
                    differences(&compose_path, Some(&stated), Some(&found), &mut out);
                    wrong.extend(out.into_iter().map(|d| format!("{d} ({edition})")));
                }
                Err(e) => wrong.push(format!("{compose_path}: {e}")),
            }
        }
        // The dotenv files.
        for (file, vars) in &reference.env {
            if !from_tag(file) {
                continue;
            }
            let Some(text) = vendor.file(tag, &format!("{dir}/{file}"))? else { continue };
            let in_tag = env_entries(&text);
            for (k, v) in vars {
                checked += 1;
                match in_tag.iter().find(|(tk, _)| tk == k) {
                    // The tags' own `.env` of 4.x says `nightly`; the releases set their version.
                    Some((_, tv)) if tv == v || (tv == "nightly" && v == tag) => {}
                    Some((_, tv)) => wrong.push(format!("{dir}/{file}: {k} is `{tv}` in the tag, the facts say `{v}` ({edition})")),
                    None => wrong.push(format!("{dir}/{file}: the facts state {k}, which the tag lacks ({edition})")),
                }
            }
            for (k, _) in in_tag.iter().filter(|(k, _)| !vars.iter().any(|(fk, _)| fk == k)) {
                wrong.push(format!("{dir}/{file}: the tag sets {k}, which the facts lack ({edition})"));
            }
        }
    }
    Ok((checked, wrong))
}

/// The services and volumes of a reference set whose fact names a file of the tag.
fn only_sourced(compose: &Value, origins: &[(String, canopsis_facts::compose::Origin)]) -> Value {
    let sourced = |kind: &str, name: &str| origins.iter().any(|(w, o)| w == &format!("{kind} {name}") && o.source.is_some());
    match compose {
        Value::Map(top) => Value::Map(
            top.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("services" | "volumes", Value::Map(items)) => {
                        let kind = if k == "services" { "service" } else { "volume" };
                        (k.clone(), Value::Map(items.iter().filter(|(n, _)| sourced(kind, n)).cloned().collect()))
                    }
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `found` restricted to the services and volumes `stated` names.
fn keep_keys_of(found: &Value, stated: &Value) -> Value {
    match (found, stated) {
        (Value::Map(top), Value::Map(_)) => Value::Map(
            top.iter()
                .map(|(k, v)| match (v, stated.get(k)) {
                    (Value::Map(items), Some(Value::Map(keep))) if k == "services" || k == "volumes" => {
                        (k.clone(), Value::Map(items.iter().filter(|(n, _)| keep.iter().any(|(kn, _)| kn == n)).cloned().collect()))
                    }
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
        ),
        _ => found.clone(),
    }
}

/// One fact per service and volume, and one for the file's version.
fn count_entries(compose: &Value) -> usize {
    let n = |k: &str| match compose.get(k) {
        Some(Value::Map(items)) => items.len(),
        _ => 0,
    };
    n("services") + n("volumes") + usize::from(compose.get("version").is_some())
}
