//! The catalogue as operators and the vendor see it: every release from 3.37.0 to 24.04.3
//! published, with the table of `docs/catalogue.md`, the simulated package repository and the
//! workspace kept equal to what `steps/` holds.

use std::collections::BTreeSet;
use std::path::Path;

use canup::repository::{LoadOptions, Repository};
use canup::version::text;
use canup_tests::{Catalogue, pristine_repo, step_sources, workspace_dir};

const BEGIN: &str = "<!-- catalogue: written by tests/tests/catalogue.rs (CANUP_BLESS=1 rewrites it) -->";
const END: &str = "<!-- /catalogue -->";

async fn index() -> canup::repository::Index {
    let (repo, _) = pristine_repo();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
    let repo = Repository::open(repo.to_str().unwrap(), &root, &dir.path().join("cache"), &dir.path().join("trust"), &LoadOptions::default()).await.unwrap();
    repo.index().await.unwrap()
}

/// The catalogue page's table: one row per published release, what canup does for it.
fn table(index: &canup::repository::Index) -> String {
    let mut out = String::from("| release | published | what canup does |\n| --- | --- | --- |\n");
    let shared_ids: BTreeSet<String> = index.shared.iter().flat_map(|s| s.steps.iter().map(|st| st.manifest.id.clone())).collect();
    for release in &index.releases {
        let same_major = |v: &semver::Version| canup::plan::major_of(v).0 == canup::plan::major_of(&release.version).0;
        // A shared registration covering every release of the major is the era's standard
        // procedure; one covering only some is an extra of those releases (4.5.5-4.5.7's scripts).
        let extra_shared: BTreeSet<String> = index
            .shared
            .iter()
            .filter(|s| s.covers(&release.version) && !index.releases.iter().filter(|r| same_major(&r.version)).all(|r| s.covers(&r.version)))
            .flat_map(|s| s.steps.iter().map(|st| st.manifest.id.clone()))
            .collect();
        let own: Vec<String> = release.steps.iter().map(|s| s.manifest.id.clone()).filter(|id| !shared_ids.contains(id)).collect();
        let procedure: BTreeSet<String> = release
            .steps
            .iter()
            .filter(|s| s.manifest.id.starts_with("procedure-") || s.manifest.id == "compose-update")
            .map(|s| s.manifest.id.split('/').next().unwrap_or_default().to_owned())
            .collect();
        let mut what = match (&release.withdrawn, &release.barrier) {
            (Some(why), _) => format!("**withdrawn**: {why}; never planned"),
            (None, Some(b)) => format!("**migration barrier**: [{}]({}) by hand; canup upgrades up to the release before it and from it", b.guide, b.url),
            (None, None) => format!("standard ({})", procedure.into_iter().collect::<Vec<_>>().join(", ")),
        };
        let extra: Vec<String> = own.into_iter().chain(extra_shared).map(|id| format!("`{id}`")).collect();
        if release.withdrawn.is_none() && release.barrier.is_none() && !extra.is_empty() {
            what.push_str(&format!(" + {}", extra.join(", ")));
        }
        out.push_str(&format!("| {} | {} | {} |\n", text(&release.version), release.published, what.replace('|', "\\|")));
    }
    out
}

#[tokio::test]
async fn the_catalogue_page_lists_every_published_release_with_what_canup_does() {
    let index = index().await;
    let versions: Vec<String> = index.releases.iter().map(|r| text(&r.version)).collect();
    for must in ["4.0.0", "4.3.1", "4.5.12", "22.10.3", "23.04.10", "23.10.8", "24.04.3"] {
        assert!(versions.iter().any(|v| v == must), "{must} is not published: {versions:?}");
    }
    let catalogue = Catalogue::load().unwrap();
    assert_eq!(catalogue.barrier.len(), 10);
    assert_eq!(catalogue.withdrawn.len(), 3);
    let table = table(&index);
    let path = workspace_dir().join("docs/catalogue.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let start = page.find(BEGIN).expect("docs/catalogue.md has the catalogue markers");
    let end = page.find(END).expect("docs/catalogue.md has the catalogue end marker");
    let current = &page[start + BEGIN.len()..end];
    let wanted = format!("\n{table}");
    if current != wanted {
        if std::env::var_os("CANUP_BLESS").is_some() {
            std::fs::write(&path, format!("{}{wanted}{}", &page[..start + BEGIN.len()], &page[end..])).unwrap();
            return;
        }
        panic!("the catalogue table of docs/catalogue.md is not what steps/ publishes; rerun with CANUP_BLESS=1 and review:\n{table}");
    }
}

/// Every published release has the vendor's facts (the simulated host and its package
/// repository are built from them), and the facts know no release the catalogue skips but
/// those without a release note (tags 4.2.3, 4.2.4, 4.3.9, 4.5.15, 22.10.11, 22.10.12) and
/// 24.04, which the catalogue does not publish yet.
#[tokio::test]
async fn every_published_release_has_the_vendors_facts() {
    let index = index().await;
    let published: BTreeSet<String> = index.releases.iter().map(|r| text(&r.version)).collect();
    let facts = canup_tests::simhost::facts::Facts::load().unwrap();
    let known: BTreeSet<String> = facts.versions().into_iter().collect();
    let missing: Vec<&String> = published.difference(&known).collect();
    assert!(missing.is_empty(), "facts/canopsis.toml lacks {missing:?}");
    let unpublished: Vec<&String> = known.difference(&published).collect();
    assert_eq!(
        unpublished,
        ["22.10.11", "22.10.12", "3.41.0", "4.2.3", "4.2.4", "4.3.9", "4.5.15"],
        "releases the facts know and the catalogue does not publish"
    );
}

#[test]
fn every_step_crate_is_a_workspace_member() {
    let manifest = std::fs::read_to_string(workspace_dir().join("Cargo.toml")).unwrap();
    let members = manifest.lines().find(|l| l.starts_with("members = ")).unwrap();
    let mut crates = 0;
    for source in step_sources().unwrap() {
        let dir = source.dir.strip_prefix(workspace_dir()).unwrap_or(&source.dir).to_path_buf();
        let is_crate = Path::new(&source.dir).join("Cargo.toml").is_file();
        if is_crate {
            crates += 1;
            assert!(members.contains(&format!("\"{}\"", dir.display())), "{} is a crate but not a workspace member in Cargo.toml", dir.display());
        } else {
            assert!(source.steps.steps.is_empty(), "{} declares steps but has no crate", dir.display());
        }
    }
    assert!(crates >= 15, "only {crates} step crates found");
}
