//! `cargo xtask bench`: the figures the issues name, each with its goal and the ratio of the
//! measurement to the goal, all measured in one run (machines are shared and noisy: compare
//! ratios, not absolute numbers across runs). Medians of repeated runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use canup::manifest::{ReleaseSteps, STEP_API};
use canup::repository::vendor::{self, Expiry, RoleKeyFiles};
use canup::repository::{Index, LoadOptions, Repository};
use canup::sandbox::Sandbox;
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::{guest_wasm, workspace_dir};
use semver::Version;

const RELEASES: u64 = 150;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    figure: String,
    value: Duration,
    goal: Option<Duration>,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The releases an upgrade from `from` to `to` goes through (C < R ≤ T), as planning lists them.
fn path(index: &Index, from: &Version, to: &Version) -> Vec<Version> {
    index
        .releases
        .iter()
        .filter(|r| &r.version > from && &r.version <= to && r.withdrawn.is_none() && (r.version.pre.is_empty() || &r.version == to))
        .map(|r| r.version.clone())
        .collect()
}

async fn plan_once(url: &str, root: &[u8], cache: &Path) -> Result<usize> {
    let repo = Repository::open(url, root, cache, &LoadOptions::default()).await?;
    let index = repo.index().await?;
    Ok(path(&index, &Version::new(3, 20, 0), &Version::new(3, 140, 0)).len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let work = tempfile::tempdir()?;
    let module = std::fs::read(guest_wasm("canopsis-3-40-0"))?;
    let template = ReleaseSteps::load(&workspace_dir().join("steps/canopsis-3.40.0/step.toml"))?;

    // A repository of 150 releases, published with the vendor code.
    let generate = Instant::now();
    let repo = work.path().join("repo");
    let key = work.path().join("bench.key");
    vendor::keygen(&key).await?;
    vendor::init(&repo, &RoleKeyFiles { root: vec![key.clone()], ..Default::default() }, 1, &Expiry::default()).await?;
    for minor in 0..RELEASES {
        let version = Version::new(3, minor, 0);
        let mut release = template.clone();
        release.release = Some(version.clone());
        for step in &mut release.steps {
            step.id = step.id.replace("3.40.0", &version.to_string());
        }
        vendor::add_release(&repo, &[key.clone()], &Expiry::default(), &version, "2020-05-04", Some((&release, &module)), &[]).await?;
    }
    eprintln!("generated a {RELEASES}-release repository in {:.1} s", generate.elapsed().as_secs_f64());
    let url = serve_repo(repo.clone(), Control::default()).await;
    let root = std::fs::read(repo.join("metadata/1.root.json"))?;

    let mut rows = Vec::new();
    // Cold: empty cache, everything over loopback HTTP.
    let mut cold = Vec::new();
    for i in 0..10 {
        let cache = work.path().join(format!("cold-{i}"));
        let t = Instant::now();
        let n = plan_once(&url, &root, &cache).await?;
        cold.push(t.elapsed());
        assert_eq!(n, 120, "the path 3.20.0 → 3.140.0 has 120 releases");
    }
    rows.push(Row { figure: format!("fetch + verify + list path, {RELEASES} releases, cold (loopback HTTP)"), value: median(cold), goal: Some(Duration::from_millis(200)) });
    // Warm: the TUF metadata cache is filled (rollback state, unchanged metadata).
    let cache = work.path().join("warm");
    plan_once(&url, &root, &cache).await?;
    let mut warm = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        plan_once(&url, &root, &cache).await?;
        warm.push(t.elapsed());
    }
    rows.push(Row { figure: format!("fetch + verify + list path, {RELEASES} releases, warm (cache)"), value: median(warm), goal: Some(Duration::from_millis(20)) });

    // One step's start: compile from scratch vs. load from the compiled cache.
    let mut compile = Vec::new();
    for _ in 0..5 {
        let sandbox = Sandbox::new(None)?;
        let t = Instant::now();
        sandbox.load("bench", &module, &STEP_API)?;
        compile.push(t.elapsed());
    }
    rows.push(Row { figure: "step start: cold compile (Cranelift)".into(), value: median(compile), goal: None });
    let compiled = work.path().join("compiled");
    Sandbox::new(Some(&compiled))?.load("bench", &module, &STEP_API)?;
    let sandbox = Sandbox::new(Some(&compiled))?;
    let mut cached = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let loaded = sandbox.load("bench", &module, &STEP_API).context("cached load")?;
        cached.push(t.elapsed());
        assert!(loaded.from_cache);
    }
    rows.push(Row { figure: "step start: from the compiled cache".into(), value: median(cached), goal: Some(Duration::from_millis(3)) });

    println!("| figure | median | goal | ratio to goal |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        let (goal, ratio) = match r.goal {
            Some(g) => (format!("≤ {}", ms(g)), format!("{:.2}{}", r.value.as_secs_f64() / g.as_secs_f64(), if r.value <= g { "" } else { " (missed)" })),
            None => ("-".into(), "-".into()),
        };
        println!("| {} | {} | {goal} | {ratio} |", r.figure, ms(r.value));
    }
    let (c, w) = (rows[0].value.as_secs_f64(), rows[1].value.as_secs_f64());
    println!("\ncold / warm: {:.1}x; compile / cached start: {:.1}x", c / w, rows[2].value.as_secs_f64() / rows[3].value.as_secs_f64());
    Ok(())
}
