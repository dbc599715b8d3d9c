//! How canup's file formats grow without a new binary, and how they stay strict where people
//! type them.
//!
//! The rule (also in `docs/repository.md`): in what canup is *sent* (the signed release index
//! and the step manifests in it), a field this canup does not know is ignored, so that the
//! vendor can add optional information and every canup in the field keeps working. A field
//! whose meaning an older canup must not miss (a migration barrier: ignoring it would plan
//! across a migration guide) is announced in a `requires` list of feature names, on the index
//! or on a manifest; a canup that does not know one of them refuses the whole index before
//! anything is planned, with "this repository needs a newer canup (feature X)".
//!
//! In what people *write* (`canup.toml`, a `step.toml`), an unknown key is an error naming it:
//! a misspelt `capabilites` must not silently drop a step's declarations, nor a misspelt policy
//! key the operator's intent. Both use the same types; [`strict_toml`] is the strict reading.

use serde::de::DeserializeOwned;
use thiserror::Error;

/// The features of the index and manifest formats this canup implements.
pub const FEATURES: &[&str] = &[BARRIERS];

/// Releases may carry a migration barrier that planning never crosses.
pub const BARRIERS: &str = "barriers";

/// The names in `requires` this canup does not implement.
pub fn unknown_features(requires: &[String]) -> Vec<String> {
    requires.iter().filter(|f| !FEATURES.contains(&f.as_str())).cloned().collect()
}

#[derive(Debug, Error)]
pub enum StrictError {
    #[error("{0}")]
    Parse(Box<toml::de::Error>),
    #[error("unknown key{} {}: misspelt, or a key of a newer canup", if .0.len() > 1 { "s" } else { "" }, .0.join(", "))]
    Unknown(Vec<String>),
}

/// A file a person wrote (canup.toml, a policy file) that canup cannot use, naming it.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// toml's message shows the line; an unknown key is named by its path.
    #[error("config {path}: {source}")]
    Parse { path: String, source: StrictError },
    #[error("config {path}: {what}: {why}")]
    Invalid { path: String, what: String, why: String },
}

/// Reads TOML a person wrote into types that are lenient for signed metadata: any key the
/// types do not have is an error naming its path (`step.0.capabilites`).
pub fn strict_toml<T: DeserializeOwned>(text: &str) -> Result<T, StrictError> {
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| StrictError::Parse(Box::new(e)))?;
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string())).map_err(|e| StrictError::Parse(Box::new(e)))?;
    if unknown.is_empty() {
        return Ok(value);
    }
    Err(StrictError::Unknown(
        unknown
            .into_iter()
            .map(|path| match line_of(text, &path) {
                Some(line) => format!("`{path}` (line {line})"),
                None => format!("`{path}`"),
            })
            .collect(),
    ))
}

/// The line where the last name of `path` (`policy.exec.0.argz`) is set, when exactly one line
/// sets a key of that name: a pointer for the reader, the path itself stays exact.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let key = path.rsplit('.').next()?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().strip_prefix(key).and_then(|rest| rest.trim_start().chars().next()).is_some_and(|c| c == '=' || c == '.'));
    match (lines.next(), lines.next()) {
        (Some((n, _)), None) => Some(n + 1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        value: u32,
    }

    #[test]
    fn strict_reading_names_every_unknown_key_and_lenient_reading_skips_them() {
        let text = "name = \"x\"\nsurprise = 1\n[[inner]]\nvalue = 1\nvalu = 2\n";
        let e = strict_toml::<Outer>(text).unwrap_err();
        assert_eq!(e.to_string(), "unknown keys `inner.0.valu` (line 5), `surprise` (line 2): misspelt, or a key of a newer canup");
        assert_eq!(toml::from_str::<Outer>(text).unwrap().inner[0].value, 1);
        assert!(matches!(strict_toml::<Outer>("name = 1\n"), Err(StrictError::Parse(_))));
    }

    #[test]
    fn only_features_this_canup_implements_are_known() {
        assert!(unknown_features(&[BARRIERS.to_owned()]).is_empty());
        assert_eq!(unknown_features(&["barriers".into(), "lazy-delegations".into()]), ["lazy-delegations"]);
    }
}
