//! The Docker Compose update (`mise-a-jour.md`, « Mise à jour en environnement Docker
//! Compose »), shipped with every release from 3.x to 24.04: « resynchronisez l'ensemble de
//! vos fichiers Docker Compose avec les fichiers de référence correspondant à la version
//! voulue », then the era's `docker-compose up -d` or `docker compose up -d`.
//!
//! A three-way resync (`canup_sdk::resync`): the base is the vendor's reference set of the
//! installed release, "theirs" the target's, both rendered from the facts compiled into this
//! module (`facts/compose.toml`, checked against the vendor's tags by `cargo xtask
//! vendor-check`), and "ours" is the operator's project. What the vendor changed between the
//! two releases is applied; what the operator changed (ports, values, services, volumes,
//! variables, override files, which are never read) stays. Where both changed the same key,
//! nothing is written: every such key is named with the operator's value and the reference's
//! old and new ones. Every value written comes from the target's reference or from the
//! operator's files.
//!
//! Pro's reference files are not public: its facts are inferred from the notes and guides,
//! and the step says which.
//!
//! Two steps: `compose-check` (preflight) resyncs in memory and stops the upgrade on a
//! conflict before any step has changed anything (a release's pre-update steps may stop the
//! containers); `compose-update` (update) resyncs again, writes and runs Compose.

use canopsis_facts::compose::{ComposeFacts, Reference};
use canup_sdk::resync::{self, ResyncError, Resynced};
use canup_sdk::{Context, Error, Result, bail, context, exec::Command, fs, helpers, ui};

canup_sdk::export_step! {
    "compose-check" => compose_check,
    "compose-update" => compose_update,
}

/// Pro's reference split in three from 4.4.0 (migration-4.4.0.md): not in the facts.
const SPLIT: [&str; 3] = ["00-data.docker-compose.yml", "01-prov.docker-compose.yml", "02-app.docker-compose.yml"];

/// Whether the project is laid out as Pro's split reference.
fn split_layout(dir: &str) -> Result<bool> {
    for f in SPLIT {
        if fs::exists(&format!("{dir}/{f}"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One file of the project, resynced.
struct Planned {
    path: String,
    /// What the file holds now (empty: it does not exist yet).
    before: String,
    result: Resynced,
}

fn reference(facts: &ComposeFacts, version: &canup_sdk::semver::Version, edition: &str) -> Result<Reference> {
    let release = context::version_text(version);
    facts.reference(&release, edition).map_err(|why| {
        Error::msg(format!(
            "this compose-update has no reference Compose files for Canopsis {release} ({edition} edition): {why}; nothing was changed. Resync the project by hand as the release notes say, or use a repository whose steps know {release}"
        ))
    })
}

fn text_of<'a>(r: &'a Reference, file: &str) -> Option<&'a str> {
    r.files.iter().find(|(f, _)| f == file).map(|(_, t)| t.as_str())
}

/// Every file of the target's set, resynced in memory; the conflicts of all of them.
fn resync_all(dir: &str, base: &Reference, theirs: &Reference) -> Result<std::result::Result<Vec<Planned>, Vec<String>>> {
    let mut planned = Vec::new();
    let mut conflicts = Vec::new();
    for (file, their_text) in &theirs.files {
        let path = format!("{dir}/{file}");
        let base_text = text_of(base, file).unwrap_or("");
        let yaml = *file == theirs.layout.compose_file;
        let ours = if fs::exists(&path)? {
            fs::read_to_string(&path)?
        } else if yaml && split_layout(dir)? {
            bail!(
                "{dir} holds Pro's split Compose files ({}, from the 4.4.0 migration guide) and no {file}: their reference content is not public, so canup cannot resync them; resync them by hand as the release notes say, or go back to one {file} (the guide's « ancien procédé »), then run canup again; nothing was changed",
                SPLIT.join(", ")
            );
        } else if text_of(base, file).is_some() {
            bail!(
                "{path} is missing: the reference files of {} and of the target both have it; restore it (from your backup, or the {} reference) and run canup again; nothing was changed",
                base.release,
                base.release
            );
        } else {
            // New with the target: the operator's file starts as the reference's.
            let result = Resynced { text: their_text.clone(), applied: vec![format!("{file}: new in the reference")], kept: vec![] };
            planned.push(Planned { path, before: String::new(), result });
            continue;
        };
        let result = if yaml { resync::yaml(base_text, their_text, &ours) } else { resync::env(base_text, their_text, &ours) };
        match result {
            Ok(r) => planned.push(Planned { path, before: ours, result: r }),
            Err(ResyncError::Conflicts(found)) => conflicts.extend(found.into_iter().map(|c| format!("{path}: {c}"))),
            Err(ResyncError::Unwritable(found)) => conflicts.extend(found.into_iter().map(|w| format!("{path}: {}", resync::redact(&w)))),
            Err(e @ ResyncError::Parse { .. }) => bail!("{path}: {}; nothing was changed", resync::redact(&e.to_string())),
        }
    }
    Ok(if conflicts.is_empty() { Ok(planned) } else { Err(conflicts) })
}

/// The resync of the project in memory, from the installed release's reference to the
/// target's: every file's new text, or the error that stops the upgrade (nothing written).
struct Prepared {
    dir: String,
    theirs: Reference,
    planned: Vec<Planned>,
}

fn prepare(ctx: &Context) -> Result<Prepared> {
    let dir = helpers::compose_dir();
    let facts = ComposeFacts::embedded().map_err(Error::msg)?;
    let base = reference(&facts, &ctx.installed, &ctx.edition)?;
    let theirs = reference(&facts, &ctx.target, &ctx.edition)?;
    let planned = match resync_all(&dir, &base, &theirs)? {
        Ok(p) => p,
        Err(stops) => bail!(
            "nothing was changed: {} change(s) of the reference from {} to {} cannot be made in {dir}:\n  {}\nfor a key both you and the reference changed, put the value you want to keep into the file (yours or the reference's new one), or move your change to docker-compose.override.yml, which canup never reads or changes; then run canup again",
            stops.len(),
            base.release,
            theirs.release,
            stops.join("\n  ")
        ),
    };
    // What canup could not know, said once: Pro's files are not public, nor 3.x's.
    let mut inferred: Vec<&str> = base.inferred.iter().chain(&theirs.inferred).map(|w| w.split(':').next().unwrap_or(w)).collect();
    inferred.sort_unstable();
    inferred.dedup();
    if !inferred.is_empty() && ctx.phase == "preflight" {
        ui::warn(&format!(
            "{} facts of the reference files are inferred from the notes and guides, not read from the vendor's files (facts/compose.toml says which note): {}",
            inferred.len(),
            inferred.join(", ")
        ));
    }
    Ok(Prepared { dir, theirs, planned })
}

/// Before any step changes anything: the resync must be possible.
fn compose_check(ctx: &Context) -> Result<()> {
    let p = prepare(ctx)?;
    let changing = p.planned.iter().filter(|f| !f.result.unchanged()).count();
    let kept: usize = p.planned.iter().map(|f| f.result.kept.len()).sum();
    ui::info(&format!("{}: {changing} file(s) to resync, {kept} change(s) of yours kept, no conflict", p.dir));
    Ok(())
}

fn compose_update(ctx: &Context) -> Result<()> {
    let Prepared { dir, theirs, planned } = prepare(ctx)?;
    for p in &planned {
        for kept in &p.result.kept {
            ui::info(&resync::redact(&format!("{}: yours, kept: {kept}", p.path)));
        }
    }
    for p in planned.iter().filter(|p| !p.result.unchanged()) {
        // The change as a unified diff, hunk by hunk (a message is bounded), then the change:
        // a dry run shows the first and lists the second without making it.
        ui::info(&resync::redact(&format!("{}: {}", p.path, p.result.applied.join("; "))));
        let diff = resync::redact(&resync::unified_diff(&p.path, &p.before, &p.result.text));
        for hunk in hunks(&diff) {
            ui::info(hunk);
        }
        // A file new with the target is made under the step's `create` rule.
        fs::write(&p.path, &p.result.text)?;
    }
    if planned.iter().all(|p| p.result.unchanged()) {
        ui::info(&format!("{dir} already matches the {} reference", theirs.release));
    }
    // The era's command, with the edition the reference files read (`${CPS_EDITION}.env`).
    let (program, args) = theirs.layout.command.split_first().ok_or_else(|| Error::msg("the Compose facts name no command"))?;
    let program = format!("/usr/bin/{program}");
    let mut up = Command::new(&program).args(args.iter().cloned()).cwd(dir.as_str());
    if let Some(edition) = &theirs.layout.cps_edition {
        up = up.env("CPS_EDITION", edition.as_str());
    }
    up.run()?;
    Ok(())
}

/// A unified diff cut at its hunks, the file header with the first.
fn hunks(diff: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = diff.match_indices("\n@@ ").map(|(i, _)| i + 1).skip(1).collect();
    starts.insert(0, 0);
    starts.push(diff.len());
    starts.windows(2).map(|w| diff[w[0]..w[1]].trim_end_matches('\n')).filter(|h| !h.is_empty()).collect()
}
