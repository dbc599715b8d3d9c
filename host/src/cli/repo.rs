//! `canup repo …`: the vendor's commands (keys, publication, signing, rotations) and the
//! operator's `repo verify`.

use std::path::PathBuf;

use anyhow::Context;
use canup::exit::ExitCode;
use canup::manifest::ReleaseSteps;
use canup::repository::vendor::{self, RoleKeyFiles, VendorError};
use canup::repository::{LoadOptions, Repository};

use super::args::{GlobalArgs, RepoCommand, SigningArgs};
use super::settings::Settings;
use super::{Failure, usage};

pub async fn run(global: &GlobalArgs, cmd: RepoCommand) -> Result<(), Failure> {
    // A vendor command that fails for another reason than its arguments failed like a step.
    let vendor_err = |e: VendorError| match e {
        VendorError::Usage(_) => usage(e),
        other => Failure::new(ExitCode::StepFailed, other),
    };
    match cmd {
        RepoCommand::Keygen { out } => {
            let id = vendor::keygen(&out).await.map_err(vendor_err)?;
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
            let thresholds = vendor::Thresholds {
                root: root_threshold.unwrap_or(threshold),
                targets: targets_threshold.unwrap_or(threshold),
                snapshot: snapshot_threshold.unwrap_or(threshold),
                timestamp: timestamp_threshold.unwrap_or(threshold),
            };
            vendor::init(&dir, &keys, &thresholds, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("initialised {} (root: {}/metadata/1.root.json)", dir.display(), dir.display());
        }
        RepoCommand::AddRelease { dir, steps, module, includes, published, data, signing: SigningArgs { keys, expiry } } => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read module {}", p.display())).map_err(usage);
            let release = ReleaseSteps::load(&steps).map_err(usage)?;
            let version = release.release.clone().ok_or_else(|| usage(anyhow::anyhow!("{} names no `release`", steps.display())))?;
            let published = published
                .or_else(|| release.published.clone())
                .ok_or_else(|| usage(anyhow::anyhow!("no publication date: pass --published or set `published` in {}", steps.display())))?;
            let own_module = match (&module, release.steps.is_empty()) {
                (Some(m), _) => Some(read(m)?),
                (None, true) => None,
                (None, false) => return Err(usage(anyhow::anyhow!("{} declares steps: pass the --module implementing them", steps.display()))),
            };
            let mut shared = Vec::new();
            for (toml, wasm) in &includes {
                let s = ReleaseSteps::load(toml).map_err(usage)?;
                if let Some(range) = &s.applies
                    && !range.matches(&version)
                {
                    return Err(usage(anyhow::anyhow!("{} applies to {range}, not to {version}", toml.display())));
                }
                shared.push((s, read(wasm)?));
            }
            let shared_refs: Vec<(&ReleaseSteps, &[u8])> = shared.iter().map(|(s, m)| (s, m.as_slice())).collect();
            let own = own_module.as_deref().map(|m| (&release, m));
            let data_dir = data.or_else(|| steps.parent().map(|d| d.join("data")).filter(|d| d.is_dir()));
            let files = match &data_dir {
                Some(d) => vendor::read_data_dir(d).map_err(vendor_err)?,
                None => Vec::new(),
            };
            vendor::add_release(&dir, &keys, &expiry.expiry(), &version, &published, own, &shared_refs, &files).await.map_err(vendor_err)?;
            println!("published release {version} in {}", dir.display());
        }
        RepoCommand::Withdraw { dir, release, reason, signing: SigningArgs { keys, expiry } } => {
            vendor::withdraw(&dir, &keys, &expiry.expiry(), &release, &reason).await.map_err(vendor_err)?;
            println!("withdrew release {release}");
        }
        RepoCommand::Barrier { dir, release, guide, url, reason, signing: SigningArgs { keys, expiry } } => {
            let barrier = canup::repository::Barrier { guide, url, reason };
            vendor::set_barrier(&dir, &keys, &expiry.expiry(), &release, barrier).await.map_err(vendor_err)?;
            println!("release {release} is a migration barrier: canup plans up to the release before it and from it, never across");
        }
        RepoCommand::Sign { dir, signing: SigningArgs { keys, expiry } } => {
            vendor::sign(&dir, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("signed {}", dir.display());
        }
        RepoCommand::RefreshTimestamp { dir, keys, days } => {
            let v = vendor::refresh_timestamp(&dir, &keys, days).await.map_err(vendor_err)?;
            println!("timestamp version {v}, valid {days} day(s)");
        }
        RepoCommand::RotateRoot { dir, old_keys, new_keys, expiry } => {
            let v = vendor::rotate_root(&dir, &old_keys, &new_keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("wrote {}/metadata/{v}.root.json; re-sign the other roles if their keys changed", dir.display());
        }
        RepoCommand::RotateKeys { dir, role, new_keys, threshold, root_keys, keys, out, expiry } => {
            let change = vendor::RoleChange { role: role.into(), keys: new_keys, threshold };
            match out {
                Some(out) => {
                    let candidate = vendor::root::propose(&dir, &[change], &expiry.expiry()).await.map_err(vendor_err)?;
                    vendor::root::write_candidate(&out, &candidate).map_err(vendor_err)?;
                    println!(
                        "wrote the candidate root version {} to {}; each root key holder signs it with `canup repo sign-root {} --candidate {} --key KEY`",
                        candidate.signed.version,
                        out.display(),
                        dir.display(),
                        out.display()
                    );
                }
                None => {
                    let v = vendor::root::rotate(&dir, &[change], &root_keys, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
                    println!("published {}/metadata/{v}.root.json: role {} has its new keys", dir.display(), tough::schema::RoleType::from(role));
                }
            }
        }
        RepoCommand::SignRoot { dir, candidate, keys } => {
            let mut root = vendor::root::read_candidate(&candidate).map_err(vendor_err)?;
            vendor::root::add_signatures(&dir, &mut root, &keys).await.map_err(vendor_err)?;
            vendor::root::write_candidate(&candidate, &root).map_err(vendor_err)?;
            let missing = vendor::root::missing_signatures(&dir, &root).map_err(vendor_err)?;
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
            let root = vendor::root::read_candidate(&candidate).map_err(vendor_err)?;
            let v = vendor::root::publish_root(&dir, &root, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("published {}/metadata/{v}.root.json", dir.display());
        }
        RepoCommand::Verify { cache_dir } => return verify(&Settings::resolve(global, None)?, cache_dir).await,
    }
    Ok(())
}

async fn verify(settings: &Settings, cache_dir: Option<PathBuf>) -> Result<(), Failure> {
    let location = settings.repository()?;
    let root = settings.seed_root()?;
    let cache = cache_dir.unwrap_or_else(|| settings.state_dir.join("cache/repository"));
    let unverified = |e| Failure::new(ExitCode::Repository, e);
    let repo = Repository::open(location, &root, &cache, &settings.state_dir.join("trust"), &LoadOptions::default()).await.map_err(unverified)?;
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
    let stale = repo.stale_cache_entries();
    if stale.is_empty() {
        println!("cache {}: up to date", cache.display());
    } else {
        println!("cache {}: {} stale entries (not signed by this repository or altered):", cache.display(), stale.len());
        for p in stale {
            println!("  {}", p.display());
        }
    }
    Ok(())
}
