//! What a publication changes in the release index: a release's own steps, the shared steps
//! registered for a range of releases, data files, withdrawals and barriers. Each edit reads
//! the signed index, changes it, and signs it again through [`super::publish`].

use std::fs;
use std::path::{Path, PathBuf};

use semver::Version;

use super::{Expiry, PublishError, io, publish, read_index};
use crate::manifest::ReleaseSteps;
use crate::repository::index::{Barrier, Index, IndexData, IndexStep, Release, SharedSteps};
use crate::sha256_hex;

/// Index entries for the steps of one `step.toml` implemented by `module`, published as the
/// target `target`.
fn index_steps(steps: &ReleaseSteps, module: &[u8], target: &str) -> Vec<IndexStep> {
    let sha256 = sha256_hex(module);
    steps
        .steps
        .iter()
        .map(|m| IndexStep { api: steps.api.clone(), module: target.to_owned(), sha256: sha256.clone(), length: module.len() as u64, manifest: m.clone() })
        .collect()
}

/// The target name of a shared module: content-addressed, so that a registration updated
/// with the same module reuses the file.
fn shared_target(module: &[u8]) -> String {
    format!("shared-{}.wasm", &sha256_hex(module)[..16])
}

/// What publishing a release or registering shared steps did, for the vendor to read.
#[derive(Debug, Default)]
pub struct Published {
    /// The shared registrations a release got (their step ids).
    pub shared: Vec<String>,
    /// The releases a registration was republished in.
    pub releases: Vec<Version>,
}

/// Adds (or replaces) a release: its own steps (`release`, implemented by `module`, published
/// as `release-VERSION.wasm`), every registered shared step whose range covers it, and its
/// `data` files (`data-SHA`). Refused when an install would get no `update` step
/// ([`Index::check_update`]) or when an own step reuses a shared step's id.
pub async fn add_release(
    repo: &Path,
    keys: &[PathBuf],
    expiry: &Expiry,
    release: &ReleaseSteps,
    published: &str,
    module: Option<&[u8]>,
    data: &[(String, Vec<u8>)],
) -> Result<Published, PublishError> {
    let version = release.release.clone().ok_or_else(|| PublishError::Usage("a release's step.toml names its `release`".into()))?;
    let mut index = read_index(repo).await?;
    let mut steps = Vec::new();
    let mut files = Vec::new();
    match (module, release.steps.is_empty()) {
        (Some(module), _) => {
            let target = format!("release-{version}.wasm");
            steps.extend(index_steps(release, module, &target));
            files.push((target, module.to_vec()));
        }
        (None, true) => {}
        (None, false) => return Err(PublishError::Usage(format!("release {version} declares steps: pass the --module implementing them"))),
    }
    let mut report = Published::default();
    for shared in index.shared.iter().filter(|s| s.covers(&version)) {
        if let Some(clash) = shared.steps.iter().find(|s| steps.iter().any(|own: &IndexStep| own.manifest.id == s.manifest.id)) {
            return Err(PublishError::Usage(format!(
                "release {version} has its own step {}, which is also a registered shared step: rename the release's step",
                clash.manifest.id
            )));
        }
        steps.extend(shared.steps.iter().cloned());
        report.shared.push(shared.ids());
    }
    if steps.is_empty() {
        return Err(PublishError::Usage(format!("release {version} has no step, own or shared")));
    }
    let mut data_entries = Vec::new();
    for (name, bytes) in data {
        check_data_name(name)?;
        let sha256 = sha256_hex(bytes);
        // Content-addressed: the same reference file shipped by several releases is stored once.
        let target = format!("data-{}", &sha256[..32]);
        data_entries.push(IndexData { name: name.clone(), target: target.clone(), sha256, length: bytes.len() as u64 });
        if !files.iter().any(|(t, _)| t == &target) {
            files.push((target, bytes.clone()));
        }
    }
    let entry = Release {
        version: version.clone(),
        published: published.to_owned(),
        withdrawn: None,
        barrier: None,
        steps,
        no_update: release.no_update.clone(),
        data: data_entries,
        waived: release.waive.clone(),
    };
    index.check_update(&entry).map_err(PublishError::Usage)?;
    index.check_roles(&entry).map_err(PublishError::Usage)?;
    index.upsert(entry);
    publish(repo, keys, expiry, &index, &files).await?;
    Ok(report)
}

/// Registers shared steps (`shared` declares the range it `applies` to; `module` implements
/// them) and republishes them in every release of the repository: releases in the range get
/// the new version, releases that had an earlier registration of these steps and are no
/// longer in the range lose them. A registration sharing a step id with an earlier one
/// replaces it. Refused, with nothing written, when a release would be left without an
/// `update` step.
pub async fn add_shared(repo: &Path, keys: &[PathBuf], expiry: &Expiry, shared: &ReleaseSteps, module: &[u8]) -> Result<Published, PublishError> {
    let applies = shared.applies.clone().ok_or_else(|| PublishError::Usage("shared steps declare the releases they `applies` to".into()))?;
    if shared.steps.is_empty() {
        return Err(PublishError::Usage("the shared step.toml declares no step".into()));
    }
    let index = read_index(repo).await?;
    let target = shared_target(module);
    let registration = SharedSteps { applies, role: shared.role.clone(), steps: index_steps(shared, module, &target) };
    register(repo, keys, expiry, index, registration, &[(target, module.to_vec())]).await
}

/// Gives the registration holding `step` the range `applies`, with the module already in the
/// repository: the vendor extends an era without a rebuild, and every release of the new range
/// gets the steps (those left out of it lose them, as with `add-shared`).
pub async fn widen(repo: &Path, keys: &[PathBuf], expiry: &Expiry, step: &str, applies: semver::VersionReq) -> Result<Published, PublishError> {
    let index = read_index(repo).await?;
    let Some(current) = index.shared.iter().find(|s| s.steps.iter().any(|st| st.manifest.id == step)) else {
        let known: Vec<String> = index.shared.iter().map(|s| s.ids()).collect();
        return Err(PublishError::Usage(format!("no registration holds step {step}; registered: {}", known.join("; "))));
    };
    let registration = SharedSteps { applies, ..current.clone() };
    register(repo, keys, expiry, index, registration, &[]).await
}

/// Puts `registration` in the index in place of any holding the same step ids, republishes
/// every release it now covers or used to, and signs with `files` (its module, when new).
async fn register(
    repo: &Path,
    keys: &[PathBuf],
    expiry: &Expiry,
    mut index: Index,
    registration: SharedSteps,
    files: &[(String, Vec<u8>)],
) -> Result<Published, PublishError> {
    let new_ids: Vec<&str> = registration.steps.iter().map(|s| s.manifest.id.as_str()).collect();
    let (replaced, kept): (Vec<SharedSteps>, Vec<SharedSteps>) =
        std::mem::take(&mut index.shared).into_iter().partition(|r| r.steps.iter().any(|s| new_ids.contains(&s.manifest.id.as_str())));
    index.shared = kept;
    let mut ids: Vec<String> = new_ids.iter().map(|id| (*id).to_owned()).collect();
    ids.extend(replaced.iter().flat_map(|r| r.steps.iter().map(|s| s.manifest.id.clone())));
    let earlier: Vec<&str> = replaced.iter().flat_map(|r| r.steps.iter().map(|s| s.module.as_str())).collect();
    // Which of a release's steps came from the registration replaced: the module says (shared
    // targets); an own step with a shared id is refused when the release is published.
    let from_earlier = |s: &IndexStep| ids.contains(&s.manifest.id) && earlier.contains(&s.module.as_str());
    let mut report = Published::default();
    for release in &mut index.releases {
        let had = release.steps.iter().any(from_earlier);
        let covered = registration.covers(&release.version);
        if !had && !covered {
            continue;
        }
        if let Some(own) = release.steps.iter().find(|s| new_ids.contains(&s.manifest.id.as_str()) && !earlier.contains(&s.module.as_str())) {
            return Err(PublishError::Usage(format!(
                "release {} has its own step {}, which these shared steps would duplicate: nothing was registered",
                release.version, own.manifest.id
            )));
        }
        release.steps.retain(|s| !from_earlier(s));
        if covered {
            release.steps.extend(registration.steps.iter().cloned());
        }
        report.releases.push(release.version.clone());
    }
    report.shared.push(registration.ids());
    index.shared.push(registration);
    for release in index.releases.iter().filter(|r| r.withdrawn.is_none()) {
        index.check_update(release).map_err(|e| PublishError::Usage(format!("{e}; nothing was registered")))?;
        index.check_roles(release).map_err(|e| PublishError::Usage(format!("{e}; nothing was registered")))?;
    }
    publish(repo, keys, expiry, &index, files).await?;
    Ok(report)
}

/// Data names are relative paths of plain components, so that a step asking for
/// `compose/.env` can never be handed something named outside the release's data.
fn check_data_name(name: &str) -> Result<(), PublishError> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)));
    if ok { Ok(()) } else { Err(PublishError::Usage(format!("data file name {name:?} must be a relative path of letters, digits, '.', '_' and '-'"))) }
}

/// Every file under `dir` as (relative name, bytes), sorted by name: a release's data directory.
pub fn read_data_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), PublishError> {
        let entries = fs::read_dir(dir).map_err(io(format!("reading data directory {}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(io(format!("reading data directory {}", dir.display())))?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                let name = path.strip_prefix(base).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                out.push((name, fs::read(&path).map_err(io(format!("reading data file {}", path.display())))?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Marks a release withdrawn: operators are told why and it is never planned.
pub async fn withdraw(repo: &Path, keys: &[PathBuf], expiry: &Expiry, version: &Version, reason: &str) -> Result<(), PublishError> {
    edit_release(repo, keys, expiry, version, |r| r.withdrawn = Some(reason.to_owned())).await
}

/// Makes a release a migration barrier (the index then requires the `barriers` feature).
pub async fn set_barrier(repo: &Path, keys: &[PathBuf], expiry: &Expiry, version: &Version, barrier: Barrier) -> Result<(), PublishError> {
    if !barrier.url.starts_with("https://") {
        return Err(PublishError::Usage(format!("the migration guide's URL {:?} must be an https:// address operators can open", barrier.url)));
    }
    edit_release(repo, keys, expiry, version, |r| r.barrier = Some(barrier)).await
}

/// Changes one published release's entry and re-signs.
async fn edit_release(repo: &Path, keys: &[PathBuf], expiry: &Expiry, version: &Version, edit: impl FnOnce(&mut Release)) -> Result<(), PublishError> {
    let mut index = read_index(repo).await?;
    let release =
        index.releases.iter_mut().find(|r| &r.version == version).ok_or_else(|| PublishError::Usage(format!("the repository has no release {version}")))?;
    edit(release);
    publish(repo, keys, expiry, &index, &[]).await
}
