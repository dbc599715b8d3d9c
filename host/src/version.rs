//! Canopsis version numbers as operators write them.
//!
//! From 22.10 on, Canopsis numbers releases YY.MM.patch with a two-digit month (`23.04.1`),
//! which semver refuses (no leading zeros). canup keeps versions as [`semver::Version`]
//! (`23.4.1`) so that ordering and ranges work, reads both spellings everywhere a person or a
//! file gives one (CLI, step.toml, VERSION.txt), and writes the Canopsis spelling wherever a
//! person or a package manager reads it ([`text`]): `canopsis-core-23.04.1` is the package's
//! real name, `23.4.1` is no package at all.

use semver::Version;

/// The first major of the YY.MM numbering (Canopsis 22.10 followed 4.6).
const CALENDAR_MAJOR: u64 = 22;

/// Reads `23.04.1` as well as `23.4.1` or `4.5.3` (and pre-releases such as `4.0.0-rc.1`).
pub fn parse(s: &str) -> Option<Version> {
    let s = s.trim();
    Version::parse(s).ok().or_else(|| {
        let (core, rest) = match s.find(['-', '+']) {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        let parts: Vec<u64> = core.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let [major, minor, patch] = parts[..] else { return None };
        Version::parse(&format!("{major}.{minor}.{patch}{rest}")).ok()
    })
}

/// For clap: `--to 23.04.14`.
pub fn parse_arg(s: &str) -> Result<Version, String> {
    parse(s).ok_or_else(|| format!("{s:?} is not a Canopsis version (such as 4.5.7 or 23.04.14)"))
}

/// The version as Canopsis writes it: `23.04.1`, `4.5.3`.
pub fn text(v: &Version) -> String {
    if v.major < CALENDAR_MAJOR {
        return v.to_string();
    }
    let mut out = format!("{}.{:02}.{}", v.major, v.minor, v.patch);
    if !v.pre.is_empty() {
        out.push_str(&format!("-{}", v.pre));
    }
    if !v.build.is_empty() {
        out.push_str(&format!("+{}", v.build));
    }
    out
}

/// serde `deserialize_with` for a version a person wrote (step.toml's `release`).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a Canopsis version (such as 4.5.7 or 23.04.14)")))
}

/// serde `deserialize_with` for an optional version.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Version>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_read_and_the_canopsis_one_is_written() {
        for (written, canonical) in
            [("23.04.1", "23.4.1"), ("23.4.1", "23.4.1"), ("22.10.13", "22.10.13"), ("4.5.3", "4.5.3"), ("23.10.0-rc.1", "23.10.0-rc.1")]
        {
            let v = parse(written).unwrap();
            assert_eq!(v.to_string(), canonical);
        }
        assert_eq!(text(&parse("23.4.1").unwrap()), "23.04.1");
        assert_eq!(text(&parse("23.10.8").unwrap()), "23.10.8");
        assert_eq!(text(&parse("4.5.3").unwrap()), "4.5.3");
        assert_eq!(text(&parse("23.04.0-rc.1").unwrap()), "23.04.0-rc.1");
        assert!(parse("23.04").is_none());
        assert!(parse("x").is_none());
        assert!(parse_arg("23.o4.1").unwrap_err().contains("not a Canopsis version"));
    }
}
