//! `canup repo …`: the vendor's commands (keys, publication, signing, rotations) and the
//! operator's `repo verify`.

use std::path::PathBuf;

use anyhow::Context;
use canup::exit::ExitCode;
use canup::manifest::ReleaseSteps;
use canup::repository::publish::{self, PublishError, RoleKeyFiles};
use canup::repository::{LoadOptions, Repository};

use super::args::{GlobalArgs, RepoCommand, SigningArgs};
use super::settings::Settings;
use super::{Failure, usage};

fn read_module(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).with_context(|| format!("cannot read module {}", path.display())).map_err(usage)
}

pub async fn run(global: &GlobalArgs, cmd: RepoCommand) -> Result<(), Failure> {
    // A vendor command that fails for another reason than its arguments failed like a step.
    let publish_err = |e: PublishError| match e {
        PublishError::Usage(_) => usage(e),
        other => Failure::new(ExitCode::StepFailed, other),
    };
    match cmd {
        RepoCommand::Keygen { out } => {
            let id = publish::keygen(&out).await.map_err(publish_err)?;
            println!("created {} (key id {id})", out.display());
        }
        RepoCommand::Init {
            dir,
            root_keys,
            targets_keys,
            snapshot_keys,
            timestamp_keys,
            threshold,
            root_threshold,
            targets_threshold,
            snapshot_threshold,
            timestamp_threshold,
            expiry,
        } => {
            let keys = RoleKeyFiles { root: root_keys, targets: targets_keys, snapshot: snapshot_keys, timestamp: timestamp_keys };
            let thresholds = publish::Thresholds {
                root: root_threshold.unwrap_or(threshold),
                targets: targets_threshold.unwrap_or(threshold),
                snapshot: snapshot_threshold.unwrap_or(threshold),
                timestamp: timestamp_threshold.unwrap_or(threshold),
            };
            publish::init(&dir, &keys, &thresholds, &expiry.expiry()).await.map_err(publish_err)?;
            println!("initialised {} (root: {}/metadata/1.root.json)", dir.display(), dir.display());
        }
        RepoCommand::AddShared { dir, steps, module, signing: SigningArgs { keys, expiry } } => {
            let shared = ReleaseSteps::load(&steps).map_err(usage)?;
            if shared.applies.is_none() {
                return Err(usage(anyhow::anyhow!("{} names a `release`: publish it with `canup repo add-release`", steps.display())));
            }
            let module = read_module(&module)?;
            let done = publish::add_shared(&dir, &keys, &expiry.expiry(), &shared, &module).await.map_err(publish_err)?;
            println!("registered shared steps {} for releases {}", done.shared.join("; "), shared.applies.map(|r| r.to_string()).unwrap_or_default());
            let releases = done.releases.iter().map(ToString::to_string).collect::<Vec<_>>();
            match releases.is_empty() {
                true => println!("no published release is in its range yet; each one published later gets them"),
                false => println!("republished in {} release(s): {}", releases.len(), releases.join(", ")),
            }
        }
        RepoCommand::Registrations { dir } => {
            let index = publish::read_index(&dir).await.map_err(publish_err)?;
            if index.shared.is_empty() {
                println!("no shared steps are registered in {}", dir.display());
            }
            for s in &index.shared {
                let covered: Vec<String> = index.releases.iter().filter(|r| s.covers(&r.version)).map(|r| canup::version::text(&r.version)).collect();
                let span = match (covered.first(), covered.last()) {
                    (Some(a), Some(b)) => format!("{} releases, {a} to {b}", covered.len()),
                    _ => "no published release yet".to_owned(),
                };
                let phases: Vec<String> = s.steps.iter().map(|st| format!("{} ({})", st.manifest.id, st.manifest.phase)).collect();
                let module = s.steps.first().map(|st| st.module.as_str()).unwrap_or_default();
                println!("{:<10} {:<28} {}: {}; module {module}", s.role.as_deref().unwrap_or("-"), s.applies.to_string(), span, phases.join(", "));
            }
        }
        RepoCommand::Widen { dir, step, applies, signing: SigningArgs { keys, expiry } } => {
            let done = publish::widen(&dir, &keys, &expiry.expiry(), &step, applies.clone()).await.map_err(publish_err)?;
            let releases = done.releases.iter().map(canup::version::text).collect::<Vec<_>>();
            println!("{} now registered for {applies}; republished in {} release(s): {}", done.shared.join("; "), releases.len(), releases.join(", "));
        }
        RepoCommand::AddRelease { dir, steps, module, published, data, signing: SigningArgs { keys, expiry } } => {
            let release = ReleaseSteps::load(&steps).map_err(usage)?;
            let version = release
                .release
                .clone()
                .ok_or_else(|| usage(anyhow::anyhow!("{} names no `release` (shared steps are registered with `canup repo add-shared`)", steps.display())))?;
            let published = published
                .or_else(|| release.published.clone())
                .ok_or_else(|| usage(anyhow::anyhow!("no publication date: pass --published or set `published` in {}", steps.display())))?;
            let module = module.as_ref().map(read_module).transpose()?;
            if module.is_none() && !release.steps.is_empty() {
                return Err(usage(anyhow::anyhow!("{} declares steps: pass the --module implementing them", steps.display())));
            }
            let data_dir = data.or_else(|| steps.parent().map(|d| d.join("data")).filter(|d| d.is_dir()));
            let files = match &data_dir {
                Some(d) => publish::read_data_dir(d).map_err(publish_err)?,
                None => Vec::new(),
            };
            let done = publish::add_release(&dir, &keys, &expiry.expiry(), &release, &published, module.as_deref(), &files).await.map_err(publish_err)?;
            println!("published release {version} in {}", dir.display());
            let own = release.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>();
            println!("  own steps: {}", if own.is_empty() { "none".to_owned() } else { own.join(", ") });
            println!("  shared steps: {}", if done.shared.is_empty() { "none".to_owned() } else { done.shared.join("; ") });
            if let Some(why) = &release.no_update {
                println!("  no update step for some installs, on purpose: {why}");
            }
        }
        RepoCommand::Withdraw { dir, release, reason, signing: SigningArgs { keys, expiry } } => {
            publish::withdraw(&dir, &keys, &expiry.expiry(), &release, &reason).await.map_err(publish_err)?;
            println!("withdrew release {release}");
        }
        RepoCommand::Barrier { dir, release, guide, url, reason, signing: SigningArgs { keys, expiry } } => {
            let barrier = canup::repository::Barrier { guide, url, reason };
            publish::set_barrier(&dir, &keys, &expiry.expiry(), &release, barrier).await.map_err(publish_err)?;
            println!("release {release} is a migration barrier: canup plans up to the release before it and from it, never across");
        }
        RepoCommand::Sign { dir, signing: SigningArgs { keys, expiry } } => {
            publish::sign(&dir, &keys, &expiry.expiry()).await.map_err(publish_err)?;
            println!("signed {}", dir.display());
        }
        RepoCommand::RefreshTimestamp { dir, keys, days } => {
            let v = publish::refresh_timestamp(&dir, &keys, days).await.map_err(publish_err)?;
            println!("timestamp version {v}, valid {days} day(s)");
        }
        RepoCommand::RotateRoot { dir, old_keys, new_keys, expiry } => {
            let v = publish::rotate_root(&dir, &old_keys, &new_keys, &expiry.expiry()).await.map_err(publish_err)?;
            println!("wrote {}/metadata/{v}.root.json; re-sign the other roles if their keys changed", dir.display());
        }
        RepoCommand::RotateKeys { dir, role, new_keys, threshold, root_keys, keys, out, expiry } => {
            let change = publish::RoleChange { role: role.into(), keys: new_keys, threshold };
            match out {
                Some(out) => {
                    let candidate = publish::root::propose(&dir, &[change], &expiry.expiry()).await.map_err(publish_err)?;
                    publish::root::write_candidate(&out, &candidate).map_err(publish_err)?;
                    println!(
                        "wrote the candidate root version {} to {}; each root key holder signs it with `canup repo sign-root {} --candidate {} --key KEY`",
                        candidate.signed.version,
                        out.display(),
                        dir.display(),
                        out.display()
                    );
                }
                None => {
                    let v = publish::root::rotate(&dir, &[change], &root_keys, &keys, &expiry.expiry()).await.map_err(publish_err)?;
                    println!("published {}/metadata/{v}.root.json: role {} has its new keys", dir.display(), tough::schema::RoleType::from(role));
                }
            }
        }
        RepoCommand::SignRoot { dir, candidate, keys } => {
            let mut root = publish::root::read_candidate(&candidate).map_err(publish_err)?;
            publish::root::add_signatures(&dir, &mut root, &keys).await.map_err(publish_err)?;
            publish::root::write_candidate(&candidate, &root).map_err(publish_err)?;
            let missing = publish::root::missing_signatures(&dir, &root).map_err(publish_err)?;
            if missing.is_empty() {
                println!(
                    "{} carries enough signatures: publish it with `canup repo publish-root {} --candidate {}`",
                    candidate.display(),
                    dir.display(),
                    candidate.display()
                );
            } else {
                println!("{} now has {} signature(s); still missing:", candidate.display(), root.signatures.len());
                for m in missing {
                    println!("  {m}");
                }
            }
        }
        RepoCommand::PublishRoot { dir, candidate, keys, expiry } => {
            let root = publish::root::read_candidate(&candidate).map_err(publish_err)?;
            let v = publish::root::publish_root(&dir, &root, &keys, &expiry.expiry()).await.map_err(publish_err)?;
            println!("published {}/metadata/{v}.root.json", dir.display());
        }
        RepoCommand::Verify { cache_dir } => return verify(&Settings::resolve(global, None)?, cache_dir).await,
    }
    Ok(())
}

async fn verify(settings: &Settings, cache_dir: Option<PathBuf>) -> Result<(), Failure> {
    let location = settings.repository()?;
    let root = settings.seed_root()?;
    // Only where it is told: a verification is an inspection, and writing the operator's state
    // directory would move the root of trust `apply` starts from behind the operator's back.
    // Without --cache-dir, a temporary directory removed at the end: trust starts from the
    // configured root.
    let (cache, _scratch) = match cache_dir {
        Some(dir) => (dir, None),
        None => {
            let scratch = tempfile::tempdir()
                .map_err(|e| usage(anyhow::anyhow!("cannot create a temporary directory for the verification (or give --cache-dir): {e}")))?;
            (scratch.path().to_path_buf(), Some(scratch))
        }
    };
    let unverified = |e| Failure::new(ExitCode::Repository, e);
    let repo = Repository::open(location, &root, &cache, &cache.join("trust"), &LoadOptions::default()).await.map_err(unverified)?;
    println!("repository {location}: metadata verified");
    let now = jiff::Timestamp::now();
    for (role, expires) in repo.expirations() {
        let left = expires.duration_since(now);
        println!("  {role:<9} expires {expires} (in {:.1} days)", left.as_secs_f64() / 86400.0);
    }
    let index = repo.index().await.map_err(unverified)?;
    let mut modules = std::collections::BTreeSet::new();
    for release in &index.releases {
        let mut state = release.withdrawn.as_ref().map(|r| format!(" WITHDRAWN: {r}")).unwrap_or_default();
        if let Some(b) = &release.barrier {
            state.push_str(&format!(" BARRIER: {} ({})", b.guide, b.url));
        }
        println!("  release {} ({}) {} steps{state}", release.version, release.published, release.steps.len());
        for step in &release.steps {
            if modules.insert(step.module.clone()) {
                repo.module(step).await.map_err(unverified)?;
            }
        }
    }
    println!("  {} step modules verified (length and sha256)", modules.len());
    for shared in &index.shared {
        println!("  shared steps {} for releases {}", shared.ids(), shared.applies);
    }
    // A signed index can still be a vendor's mistake: a release applying which would install
    // nothing. Said here, before an operator plans it.
    let gaps: Vec<String> = index.releases.iter().filter(|r| r.withdrawn.is_none()).filter_map(|r| index.check_update(r).err()).collect();
    let stale = repo.stale_cache_entries();
    if stale.is_empty() {
        println!("cache {}: up to date", cache.display());
    } else {
        println!("cache {}: {} stale entries (not signed by this repository or altered):", cache.display(), stale.len());
        for p in stale {
            println!("  {}", p.display());
        }
    }
    if !gaps.is_empty() {
        return Err(Failure::new(
            ExitCode::Repository,
            anyhow::anyhow!("{} release(s) cannot be applied as published; the vendor must republish them:\n  {}", gaps.len(), gaps.join("\n  ")),
        ));
    }
    Ok(())
}
