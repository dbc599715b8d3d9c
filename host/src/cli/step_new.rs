//! `canup step new DIR --release X`: a step crate that builds as it stands, for step authors.
//!
//! The SDK is not on a registry, so the crate needs one it can reach by path: by default the
//! SDK this canup was built with (the one of its step contract) is written into the crate;
//! `--sdk PATH` points at another copy (a canup checkout's `sdk/`). The templates live in
//! `sdk/template/`, beside the SDK they go with.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use canup::manifest::STEP_API;
use semver::Version;

use super::{Failure, usage};

/// The SDK's sources, embedded. `the_embedded_sdk_is_the_whole_sdk` keeps the list complete.
const SDK_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    ("README.md", include_str!("../../../sdk/README.md")),
    ("wit/step.wit", include_str!("../../../sdk/wit/step.wit")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/context.rs", include_str!("../../../sdk/src/context.rs")),
    ("src/database.rs", include_str!("../../../sdk/src/database.rs")),
    ("src/detect.rs", include_str!("../../../sdk/src/detect.rs")),
    ("src/exec.rs", include_str!("../../../sdk/src/exec.rs")),
    ("src/fs.rs", include_str!("../../../sdk/src/fs.rs")),
    ("src/helpers.rs", include_str!("../../../sdk/src/helpers.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    ("src/ui.rs", include_str!("../../../sdk/src/ui.rs")),
    ("src/resync/mod.rs", include_str!("../../../sdk/src/resync/mod.rs")),
    ("src/resync/env.rs", include_str!("../../../sdk/src/resync/env.rs")),
    ("src/resync/yaml.rs", include_str!("../../../sdk/src/resync/yaml.rs")),
];

/// The YAML reading the SDK's resync shares with canup (`canup-yaml`), embedded beside it:
/// the SDK names it as `../yaml`.
const YAML_FILES: &[(&str, &str)] = &[("Cargo.toml", include_str!("../../../yaml/Cargo.toml")), ("src/lib.rs", include_str!("../../../yaml/src/lib.rs"))];

const CARGO_TOML: &str = include_str!("../../../sdk/template/Cargo.toml");
const STEP_TOML: &str = include_str!("../../../sdk/template/step.toml");
const LIB_RS: &str = include_str!("../../../sdk/template/lib.rs");
const STEP_TEST: &str = include_str!("../../../sdk/template/step_test.rs");
/// The policy operators get by default (the RPM's `/etc/canup/canup.toml` and the shipped
/// rules it adds, `/usr/share/canup/policy.toml`): the scaffold's test runs the step under it,
/// so a step needing more is noticed before publishing.
const OPERATOR_POLICY: &str = concat!(include_str!("../../dist/canup.toml"), "\n", include_str!("../../dist/policy.toml"));

/// The crate's package name: `canopsis-` and the version as Canopsis writes it, dots as
/// dashes (cargo allows no dots in package names): `canopsis-24-04-3`.
fn crate_name(release: &Version) -> String {
    format!("canopsis-{}", canup::version::text(release).replace(['.', '+'], "-"))
}

pub fn run(dir: &Path, release: &Version, sdk: Option<&Path>) -> Result<(), Failure> {
    create(dir, release, sdk).map_err(usage)
}

fn create(dir: &Path, release: &Version, sdk: Option<&Path>) -> anyhow::Result<()> {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} is not empty: a step crate is created in an empty or new directory", dir.display());
    }
    let sdk_dependency = match sdk {
        Some(path) => {
            let path = path.canonicalize().with_context(|| format!("--sdk {}", path.display()))?;
            let manifest = std::fs::read_to_string(path.join("Cargo.toml")).with_context(|| format!("--sdk {}: no Cargo.toml", path.display()))?;
            if !manifest.lines().any(|l| l.trim() == "name = \"canup-sdk\"") {
                bail!("--sdk {} is not the canup-sdk crate (its Cargo.toml names another package)", path.display());
            }
            format!("canup-sdk = {{ path = {:?} }}", path.display().to_string())
        }
        None => "# The SDK of this canup's step contract, written here by `canup step new`.\ncanup-sdk = { path = \"canup-sdk\" }".to_owned(),
    };
    let name = crate_name(release);
    let fill = |template: &str| {
        template
            .replace("{crate}", &name)
            // Canopsis writes 24.04.3, semver 24.4.3: the files say what the notes say.
            .replace("{release}", &canup::version::text(release))
            .replace("{api}", &STEP_API.to_string())
            .replace("{published}", &jiff::Zoned::now().date().to_string())
            .replace("{module}", &format!("{}.wasm", name.replace('-', "_")))
            .replace("{sdk_dependency}", &sdk_dependency)
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), fill(CARGO_TOML)),
        ("step.toml".into(), fill(STEP_TOML)),
        ("src/lib.rs".into(), fill(LIB_RS)),
        ("tests/step.rs".into(), fill(STEP_TEST)),
        ("operator-policy.toml".into(), OPERATOR_POLICY.to_owned()),
        (".gitignore".into(), "/target\n".to_owned()),
    ];
    if sdk.is_none() {
        files.extend(SDK_FILES.iter().map(|(path, text)| (Path::new("canup-sdk").join(path), (*text).to_owned())));
        files.extend(YAML_FILES.iter().map(|(path, text)| (Path::new("yaml").join(path), (*text).to_owned())));
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created the step crate {name} for Canopsis {} in {}", canup::version::text(release), dir.display());
    println!("  step.toml       its steps and their capabilities (an example step to replace)");
    println!("  src/lib.rs      the example step");
    println!("  tests/step.rs   runs it twice on a simulated host (canup and canup-sim on PATH)");
    println!("build: cd {} && cargo build --target wasm32-wasip2 --profile step && cargo test", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file added to the SDK and not embedded would make every scaffolded crate fail to
    /// build: the list is checked against the directory.
    #[test]
    fn the_embedded_sdk_is_the_whole_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let mut on_disk = vec!["Cargo.toml".to_owned(), "README.md".to_owned()];
        let mut dirs = vec!["src".to_owned(), "wit".to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(sdk.join(&dir)).unwrap() {
                let entry = entry.unwrap();
                let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
                if entry.file_type().unwrap().is_dir() { dirs.push(path) } else { on_disk.push(path) }
            }
        }
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../yaml");
        let mut yaml_on_disk: Vec<String> =
            std::fs::read_dir(yaml.join("src")).unwrap().map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy())).collect();
        yaml_on_disk.push("Cargo.toml".into());
        yaml_on_disk.sort();
        let mut yaml_embedded: Vec<String> = YAML_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        yaml_embedded.sort();
        assert_eq!(yaml_embedded, yaml_on_disk);
        assert!(include_str!("../../../sdk/Cargo.toml").contains(r#"path = "../yaml""#), "the SDK finds canup-yaml where the scaffold writes it");
    }

    #[test]
    fn a_calendar_release_is_written_as_canopsis_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        create(&dir.path().join("s"), &canup::version::parse("24.04.3").unwrap(), None).unwrap();
        let step_toml = std::fs::read_to_string(dir.path().join("s/step.toml")).unwrap();
        assert!(step_toml.contains("release = \"24.04.3\"") && step_toml.contains("id = \"24.04.3/example\""), "{step_toml}");
        let test = std::fs::read_to_string(dir.path().join("s/tests/step.rs")).unwrap();
        assert!(test.contains("const RELEASE: &str = \"24.04.3\";") && !test.contains("24.4.3"), "{test}");
        assert!(std::fs::read_to_string(dir.path().join("s/Cargo.toml")).unwrap().contains("name = \"canopsis-24-04-3\""));
    }

    #[test]
    fn crate_names_have_no_dots() {
        assert_eq!(crate_name(&Version::parse("23.10.9").unwrap()), "canopsis-23-10-9");
        assert_eq!(crate_name(&Version::parse("4.0.0-rc.1").unwrap()), "canopsis-4-0-0-rc-1");
    }
}
