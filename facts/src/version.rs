use std::cmp::Ordering;

/// A Canopsis version as the vendor writes it (`23.04.1`, `4.5.5`), compared numerically:
/// semver cannot read the month's leading zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(Vec<u64>);

impl Version {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Result<Vec<u64>, _> = text.trim().split('.').map(str::parse).collect();
        match parts {
            Ok(p) if p.len() == 3 => Ok(Self(p)),
            _ => Err(format!("{text:?} is not a Canopsis version (MAJOR.MINOR.PATCH, such as 4.5.5 or 23.04.1)")),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether `version` is within `from..=to` (false when any of them is not a version).
pub fn covers(from: &str, to: &str, version: &str) -> bool {
    match (Version::parse(from), Version::parse(to), Version::parse(version)) {
        (Ok(f), Ok(t), Ok(v)) => f <= v && v <= t,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse("23.04.10").unwrap() > Version::parse("23.04.9").unwrap());
        assert!(Version::parse("22.10.0").unwrap() > Version::parse("4.6.3").unwrap());
        assert!(Version::parse("24.4").is_err());
        assert!(covers("4.5.0", "4.6.3", "4.5.10") && !covers("4.5.0", "4.6.3", "22.10.0"));
    }
}
