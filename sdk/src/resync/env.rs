//! Dotenv files (`.env`, `compose.env`): one `KEY=value` per line, merged key by key. The
//! operator's lines are kept as written (comments, quoting, order); a reference change
//! rewrites the one line it concerns, a new key goes after the key it follows in the
//! reference.

use std::collections::BTreeMap;

use super::{Conflict, ResyncError, Resynced};

/// A line's key and value: `KEY=value`, `export KEY=value`, and the `KEY:value` some vendor
/// env files use. Comments and blank lines have none.
fn entry(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("export ").unwrap_or(t);
    // The first of `=` and `:` separates (`URL=amqp://h:5672` and `PASS:a=b` both read right).
    let at = t.find(['=', ':'])?;
    Some((t[..at].trim(), t[at + 1..].trim()))
}

/// What the value means: quotes around it are the file's syntax, not the value.
fn unquoted(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// The keys of a dotenv text in file order with their values as written (quotes included);
/// a repeated key's last value is the one that counts.
pub fn entries(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in text.lines().filter_map(entry) {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_owned(),
            None => out.push((k.to_owned(), v.to_owned())),
        }
    }
    out
}

/// The separator the line uses between key and value: the first of `=` and `:`.
fn separator(line: &str) -> char {
    line.find(['=', ':']).and_then(|i| line[i..].chars().next()).unwrap_or('=')
}

/// Resyncs the operator's dotenv file `ours` from reference `base` to reference `theirs`.
pub fn env(base: &str, theirs: &str, ours: &str) -> Result<Resynced, ResyncError> {
    let base_entries: BTreeMap<String, String> = entries(base).into_iter().collect();
    let their_entries = entries(theirs);
    let their_map: BTreeMap<&str, &str> = their_entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let our_entries: BTreeMap<String, String> = entries(ours).into_iter().collect();
    let same = |a: Option<&str>, b: Option<&str>| a.map(unquoted) == b.map(unquoted);

    let mut lines: Vec<String> = ours.lines().map(str::to_owned).collect();
    let mut conflicts = Vec::new();
    let mut applied = Vec::new();
    let line_of = |lines: &[String], key: &str| lines.iter().rposition(|l| entry(l).is_some_and(|(k, _)| k == key));

    // Keys the reference sets (new or changed), in its order.
    for (i, (key, new)) in their_entries.iter().enumerate() {
        let old = base_entries.get(key).map(String::as_str);
        if same(old, Some(new)) {
            continue;
        }
        let mine = our_entries.get(key).map(String::as_str);
        if same(mine, Some(new)) {
            continue;
        }
        if !same(mine, old) {
            conflicts.push(Conflict { key: key.clone(), ours: mine.map(str::to_owned), base: old.map(str::to_owned), theirs: Some(new.clone()) });
            continue;
        }
        match line_of(&lines, key) {
            Some(at) => {
                let sep = separator(&lines[at]);
                // `export KEY=…` stays an export.
                let export = if lines[at].trim_start().starts_with("export ") { "export " } else { "" };
                lines[at] = format!("{export}{key}{sep}{new}");
            }
            None => {
                // After the nearest key before it in the reference that the operator's file has.
                let after = their_entries[..i].iter().rev().find_map(|(k, _)| line_of(&lines, k));
                let sep = theirs.lines().find(|l| entry(l).is_some_and(|(k, _)| k == key)).map_or('=', separator);
                let line = format!("{key}{sep}{new}");
                match after {
                    Some(at) => lines.insert(at + 1, line),
                    None => lines.push(line),
                }
            }
        }
        applied.push(format!("{key}: {} → {new}", old.unwrap_or("(absent)")));
    }
    // Keys the reference removed.
    for (key, old) in &base_entries {
        if their_map.contains_key(key.as_str()) {
            continue;
        }
        let Some(mine) = our_entries.get(key) else { continue };
        if !same(Some(mine), Some(old)) {
            conflicts.push(Conflict { key: key.clone(), ours: Some(mine.clone()), base: Some(old.clone()), theirs: None });
            continue;
        }
        lines.retain(|l| entry(l).is_none_or(|(k, _)| k != key));
        applied.push(format!("{key}: {old} → (removed)"));
    }
    if !conflicts.is_empty() {
        return Err(ResyncError::Conflicts(conflicts));
    }

    let mut kept = Vec::new();
    for (key, mine) in &our_entries {
        match base_entries.get(key) {
            None if !their_map.contains_key(key.as_str()) => kept.push(format!("{key} (yours: not in the reference)")),
            Some(old) if !same(Some(mine), Some(old)) && !same(Some(mine), their_map.get(key.as_str()).copied()) => {
                kept.push(format!("{key}={mine} (reference: {old})"))
            }
            _ => {}
        }
    }
    for key in base_entries.keys() {
        if !our_entries.contains_key(key) && their_map.contains_key(key.as_str()) {
            kept.push(format!("{key} (you removed it)"));
        }
    }
    let mut text = lines.join("\n");
    if !text.is_empty() || ours.ends_with('\n') {
        text.push('\n');
    }
    if applied.is_empty() {
        text = ours.to_owned();
    }
    Ok(Resynced { text, applied, kept })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "CANOPSIS_IMAGE_TAG=4.5.5\nREDIS_TAG=5.0.8-buster\nMONGO_TAG=3.6\n";
    const THEIRS: &str = "CANOPSIS_IMAGE_TAG=4.5.6\nNEW_KEY=1\nREDIS_TAG=5.0.8-buster\n";

    #[test]
    fn reference_changes_are_applied_and_operator_changes_kept() {
        let ours = "# my site\nCANOPSIS_IMAGE_TAG=\"4.5.5\"\nREDIS_TAG=6.0-custom\nMONGO_TAG=3.6\nMY_PORT=8080\n";
        let r = env(BASE, THEIRS, ours).unwrap();
        assert_eq!(r.text, "# my site\nCANOPSIS_IMAGE_TAG=4.5.6\nNEW_KEY=1\nREDIS_TAG=6.0-custom\nMY_PORT=8080\n");
        assert_eq!(r.applied, ["CANOPSIS_IMAGE_TAG: 4.5.5 → 4.5.6", "NEW_KEY: (absent) → 1", "MONGO_TAG: 3.6 → (removed)"]);
        assert_eq!(r.kept, ["MY_PORT (yours: not in the reference)", "REDIS_TAG=6.0-custom (reference: 5.0.8-buster)"]);
    }

    #[test]
    fn both_sides_changing_a_key_is_a_conflict_naming_the_three_values() {
        let ours = "CANOPSIS_IMAGE_TAG=4.5.5-hotfix\nREDIS_TAG=5.0.8-buster\nMONGO_TAG=4.0\n";
        let err = env(BASE, THEIRS, ours).unwrap_err();
        let ResyncError::Conflicts(c) = &err else { panic!("{err}") };
        assert_eq!(
            c[0],
            Conflict { key: "CANOPSIS_IMAGE_TAG".into(), ours: Some("4.5.5-hotfix".into()), base: Some("4.5.5".into()), theirs: Some("4.5.6".into()) }
        );
        assert_eq!(c[1], Conflict { key: "MONGO_TAG".into(), ours: Some("4.0".into()), base: Some("3.6".into()), theirs: None });
        assert!(err.to_string().contains("CANOPSIS_IMAGE_TAG: yours is `4.5.5-hotfix`; the reference changed it from `4.5.5` to `4.5.6`"), "{err}");
    }

    #[test]
    fn an_up_to_date_file_is_left_byte_for_byte() {
        let ours = "CANOPSIS_IMAGE_TAG=4.5.6   \nNEW_KEY=1\nREDIS_TAG=5.0.8-buster\n";
        let r = env(BASE, THEIRS, ours).unwrap();
        assert!(r.unchanged());
        assert_eq!(r.text, ours);
        // And resyncing a resynced file again changes nothing.
        let once = env(BASE, THEIRS, "CANOPSIS_IMAGE_TAG=4.5.5\nREDIS_TAG=5.0.8-buster\nMONGO_TAG=3.6\n").unwrap();
        assert_eq!(env(BASE, THEIRS, &once.text).unwrap().text, once.text);
    }

    #[test]
    fn the_diff_of_a_resync_shows_the_changed_lines_only() {
        let ours = "# my site\nCANOPSIS_IMAGE_TAG=4.5.5\nREDIS_TAG=5.0.8-buster\nMONGO_TAG=3.6\n";
        let r = env(BASE, THEIRS, ours).unwrap();
        let diff = super::super::unified_diff("/opt/canopsis/docker/.env", ours, &r.text);
        assert!(diff.starts_with("--- a/opt/canopsis/docker/.env\n+++ b/opt/canopsis/docker/.env\n@@"), "{diff}");
        assert!(diff.contains("\n-CANOPSIS_IMAGE_TAG=4.5.5\n+CANOPSIS_IMAGE_TAG=4.5.6\n+NEW_KEY=1\n") && diff.contains("\n-MONGO_TAG=3.6\n"), "{diff}");
        assert!(super::super::unified_diff("/x", ours, ours).is_empty());
    }

    #[test]
    fn colon_separated_files_keep_their_separator() {
        let r = env("USER:root\n", "USER:admin\nPASS:x=y\n", "USER:root\n").unwrap();
        assert_eq!(r.text, "USER:admin\nPASS:x=y\n");
        assert_eq!(entries("PASS:x=y\nURL=amqp://h:5672\n"), [("PASS".to_owned(), "x=y".to_owned()), ("URL".to_owned(), "amqp://h:5672".to_owned())]);
        // An exported variable stays exported.
        assert_eq!(env("export A=1\n", "export A=2\n", "export A=1\n").unwrap().text, "export A=2\n");
    }

    #[test]
    fn secrets_are_masked_wherever_the_resync_shows_values() {
        let shown = super::super::redact(
            "+RABBITMQ_DEFAULT_PASS=canopsis\n-CPS_AMQP_URL=amqp://cpsrabbit:canopsis@rabbitmq/canopsis\n      - MONGO_INITDB_ROOT_PASSWORD=x\n  password: hunter2\nREDIS_TAG=5\n",
        );
        assert_eq!(
            shown,
            "+RABBITMQ_DEFAULT_PASS=***\n-CPS_AMQP_URL=amqp://cpsrabbit:***@rabbitmq/canopsis\n      - MONGO_INITDB_ROOT_PASSWORD=***\n  password: ***\nREDIS_TAG=5\n"
        );
        let c = Conflict { key: "RABBITMQ_DEFAULT_PASS".into(), ours: Some("mine".into()), base: Some("canopsis".into()), theirs: Some("new".into()) };
        assert!(!c.to_string().contains("mine") && !c.to_string().contains("canopsis"), "{c}");
    }
}
