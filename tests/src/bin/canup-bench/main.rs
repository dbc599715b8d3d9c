//! `cargo xtask bench`: the figures the issues name, each with its goal and the ratio of the
//! measurement to the goal, all measured in one run (machines are shared and noisy: compare
//! ratios, not absolute numbers across runs). Medians of repeated runs.
//!
//! Arguments (given by `cargo xtask bench`): `--canup BIN --stub BIN --repo DIR`, the release
//! `canup`, the simulator's stub and the published repository of the project's steps, for the
//! demo upgrade figures (see `demo.rs`).

mod demo;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use canup::manifest::{ReleaseSteps, STEP_API};
use canup::repository::publish::{self, Expiry, RoleKeyFiles};
use canup::repository::{Index, LoadOptions, Repository};
use canup::sandbox::{Allocation, Sandbox};
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::{guest_wasm, workspace_dir};
use semver::Version;

const RELEASES: u64 = 150;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[derive(Clone, Copy)]
enum Unit {
    Ms,
    Mb,
    Times,
}

struct Row {
    figure: String,
    value: f64,
    unit: Unit,
    /// At most this, in the same unit.
    goal: Option<f64>,
}

impl Row {
    fn time(figure: impl Into<String>, d: Duration, goal: Option<Duration>) -> Self {
        Self { figure: figure.into(), value: d.as_secs_f64() * 1000.0, unit: Unit::Ms, goal: goal.map(|g| g.as_secs_f64() * 1000.0) }
    }

    fn ratio(figure: impl Into<String>, value: f64, goal: Option<f64>) -> Self {
        Self { figure: figure.into(), value, unit: Unit::Times, goal }
    }

    fn show(&self, v: f64) -> String {
        match self.unit {
            Unit::Ms => format!("{v:.3} ms"),
            Unit::Mb => format!("{v:.1} MB"),
            Unit::Times => format!("{v:.2}×"),
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `--name VALUE` from the command line.
fn arg(name: &str) -> Result<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .with_context(|| format!("missing {name} PATH (run through `cargo xtask bench`)"))
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
    let repo = Repository::open(url, root, cache, &cache.join("trust"), &LoadOptions::default()).await?;
    let index = repo.index().await?;
    Ok(path(&index, &Version::new(3, 20, 0), &Version::new(3, 140, 0)).len())
}

/// Every era's longest path in the published catalogue: (installed, target).
const ERA_PATHS: &[(&str, &str)] = &[
    ("3.37.0", "3.40.0"),
    ("4.0.1", "4.1.1"),
    ("4.3.1", "4.3.8"),
    ("4.4.0", "4.4.1"),
    ("4.5.1", "4.5.14"),
    ("4.6.0", "4.6.3"),
    ("22.10.0", "22.10.13"),
    ("23.04.0", "23.04.14"),
    ("23.10.0", "23.10.8"),
];

/// Fetches and verifies the catalogue's repository, then plans every era's longest path (both
/// methods and editions): the number of releases planned.
async fn plan_catalogue_once(url: &str, root: &[u8], cache: &Path) -> Result<usize> {
    let repo = Repository::open(url, root, cache, &cache.join("trust"), &LoadOptions::default()).await?;
    let index = repo.index().await?;
    let mut planned = 0;
    for (from, to) in ERA_PATHS {
        let (from, to) = (canup::version::parse(from).context("era path")?, canup::version::parse(to).context("era path")?);
        for edition in [canup::manifest::Edition::Core, canup::manifest::Edition::Cat] {
            for method in [canup::manifest::Method::Packages, canup::manifest::Method::Compose] {
                planned += canup::plan::plan(&index, &from, Some(&to), edition, method)?.releases.len();
            }
        }
    }
    Ok(planned)
}

/// Median times of `plan` from an empty cache (10 runs, each its own) and from a filled one
/// (20 runs): `plan` gets the cache directory.
async fn cold_and_warm<F, Fut>(work: &Path, name: &str, plan: F) -> Result<(Duration, Duration)>
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut cold = Vec::new();
    for i in 0..10 {
        let cache = work.join(format!("{name}-cold-{i}"));
        let t = Instant::now();
        plan(cache).await?;
        cold.push(t.elapsed());
    }
    let cache = work.join(format!("{name}-warm"));
    plan(cache.clone()).await?;
    let mut warm = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        plan(cache.clone()).await?;
        warm.push(t.elapsed());
    }
    Ok((median(cold), median(warm)))
}

async fn catalogue_rows(rows: &mut Vec<Row>, work: &Path, inputs: &demo::Inputs) -> Result<()> {
    let url = serve_repo(inputs.repo.clone(), Control::default()).await;
    let root = std::fs::read(inputs.repo.join("metadata/1.root.json"))?;
    let releases = plan_catalogue_once(&url, &root, &work.join("catalogue-probe")).await? / 4;
    let (cold, warm) = cold_and_warm(work, "catalogue", |cache| {
        let (url, root) = (url.clone(), root.clone());
        async move { plan_catalogue_once(&url, &root, &cache).await }
    })
    .await?;
    // The goals of figure 1 (150 releases), for the published catalogue's 9 era paths × 4 installs.
    rows.push(Row::time(
        format!("6. plan the catalogue: fetch + verify + plan 9 era paths ({releases} releases) × 4 installs, cold"),
        cold,
        Some(Duration::from_millis(200)),
    ));
    rows.push(Row::time("6. plan the catalogue: the same, warm (cache)", warm, Some(Duration::from_millis(20))));
    rows.push(Row::ratio("6. plan the catalogue: cold / warm", secs(cold) / secs(warm), None));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let inputs = demo::Inputs { canup: arg("--canup")?, stub: arg("--stub")?, repo: arg("--repo")? };
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().to_path_buf();
    // CANUP_BENCH_KEEP=1 keeps the work directory (repositories, simulated hosts, state) to look into.
    let _cleanup = if std::env::var_os("CANUP_BENCH_KEEP").is_some() {
        eprintln!("keeping the work directory {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let work = work.as_path();
    let module = std::fs::read(guest_wasm("canopsis-3-40-0"))?;
    let template = ReleaseSteps::load(&workspace_dir().join("steps/canopsis-3.40.0/step.toml"))?;

    // A repository of 150 releases, published with the vendor code.
    let generate = Instant::now();
    let repo = work.join("repo");
    let key = work.join("bench.key");
    publish::keygen(&key).await?;
    publish::init(&repo, &RoleKeyFiles { root: vec![key.clone()], ..Default::default() }, &publish::Thresholds::all(1), &Expiry::default()).await?;
    for minor in 0..RELEASES {
        let version = Version::new(3, minor, 0);
        let mut release = template.clone();
        release.release = Some(version.clone());
        for step in &mut release.steps {
            step.id = step.id.replace("3.40.0", &version.to_string());
        }
        // Planning is what is timed: the releases carry their note steps only, said so.
        release.no_update = Some("bench repository: planning only".into());
        publish::add_release(&repo, std::slice::from_ref(&key), &Expiry::default(), &release, "2020-05-04", Some(&module), &[]).await?;
    }
    eprintln!("generated a {RELEASES}-release repository in {:.1} s", generate.elapsed().as_secs_f64());
    let url = serve_repo(repo.clone(), Control::default()).await;
    let root = std::fs::read(repo.join("metadata/1.root.json"))?;

    let mut rows = Vec::new();
    // Cold: empty cache, everything over loopback HTTP; warm: the TUF metadata cache is filled
    // (rollback state, unchanged metadata).
    let (cold, warm) = cold_and_warm(work, "synthetic", |cache| {
        let (url, root) = (url.clone(), root.clone());
        async move {
            let n = plan_once(&url, &root, &cache).await?;
            anyhow::ensure!(n == 120, "the path 3.20.0 → 3.140.0 has 120 releases, not {n}");
            Ok(n)
        }
    })
    .await?;
    rows.push(Row::time(format!("1. plan: fetch + verify + list path, {RELEASES} releases, cold (loopback HTTP)"), cold, Some(Duration::from_millis(200))));
    rows.push(Row::time(format!("1. plan: fetch + verify + list path, {RELEASES} releases, warm (cache)"), warm, Some(Duration::from_millis(20))));

    // One step's start: compile from scratch vs. load from the compiled cache.
    let mut compile = Vec::new();
    for _ in 0..5 {
        let sandbox = Sandbox::new(None)?;
        let t = Instant::now();
        sandbox.load("bench", &module, &STEP_API)?;
        compile.push(t.elapsed());
    }
    let compile = median(compile);
    rows.push(Row::time("2. step start: cold compile (Cranelift)", compile, None));
    let compiled = work.join("compiled");
    Sandbox::new(Some(&compiled))?.load("bench", &module, &STEP_API)?;
    let sandbox = Sandbox::new(Some(&compiled))?;
    let mut cached = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let loaded = sandbox.load("bench", &module, &STEP_API).context("cached load")?;
        cached.push(t.elapsed());
        assert!(loaded.from_cache);
    }
    let cached = median(cached);
    rows.push(Row::time("2. step start: from the compiled cache", cached, Some(Duration::from_millis(3))));
    rows.push(Row::ratio("2. cold compile / cached start", secs(compile) / secs(cached), None));

    host_call_rows(&mut rows, work).await?;

    let d = demo::measure(work, &inputs, &demo::Scenario::demo()).await?;
    rows.push(Row::time("4. demo upgrade 3.38.0 → 3.40.0: canup apply, first run (compiles every module)", d.apply_cold, None));
    rows.push(Row::time("4. demo upgrade: canup apply, compiled cache warm", d.apply_warm, None));
    rows.push(Row::time(format!("4. demo upgrade: bash script of the dry run's {} commands", d.commands), d.bash, None));
    rows.push(Row::ratio("4. demo upgrade: canup apply (warm) / bash", secs(d.apply_warm) / secs(d.bash), Some(1.3)));
    rows.push(Row::ratio("4. demo upgrade: canup apply (first run) / bash", secs(d.apply_cold) / secs(d.bash), None));
    rows.push(Row { figure: "5. peak RSS of canup apply (demo, first run)".into(), value: d.peak_rss_bytes as f64 / 1e6, unit: Unit::Mb, goal: Some(80.0) });

    // The catalogue: planning every era's longest path, and the longest apply of 23.04.
    catalogue_rows(&mut rows, work, &inputs).await?;
    let c = demo::measure(work, &inputs, &demo::Scenario::catalogue_23_04()).await?;
    rows.push(Row::time("6. catalogue apply 23.04.1 → 23.04.14 (RHEL 8, Pro): canup apply, first run (cold)", c.apply_cold, None));
    rows.push(Row::time("6. catalogue apply 23.04.1 → 23.04.14: canup apply, compiled cache warm", c.apply_warm, None));
    rows.push(Row::time(format!("6. catalogue apply 23.04.1 → 23.04.14: bash script of the dry run's {} commands", c.commands), c.bash, None));
    rows.push(Row::ratio("6. catalogue apply 23.04.1 → 23.04.14: canup apply (first run) / bash", secs(c.apply_cold) / secs(c.bash), None));
    rows.push(Row::ratio("6. catalogue apply 23.04.1 → 23.04.14: canup apply (warm) / bash", secs(c.apply_warm) / secs(c.bash), Some(1.3)));

    println!("| figure | median | goal | ratio to goal |");
    println!("| --- | --- | --- | --- |");
    let mut missed = 0;
    for r in &rows {
        let (goal, ratio) = match r.goal {
            Some(g) => {
                missed += usize::from(r.value > g);
                (format!("≤ {}", r.show(g)), format!("{:.2}{}", r.value / g, if r.value <= g { "" } else { " (missed)" }))
            }
            None => ("-".into(), "-".into()),
        };
        println!("| {} | {} | {goal} | {ratio} |", r.figure, r.show(r.value));
    }
    println!("\n{} figures with a goal, {missed} missed", rows.iter().filter(|r| r.goal.is_some()).count());
    Ok(())
}

/// Step start and host-call overhead, with the probe module's benchmark steps.
async fn host_call_rows(rows: &mut Vec<Row>, work: &Path) -> Result<()> {
    use canup::capabilities::{CapabilitySet, ExecRule, FsRules};
    use canup::manifest::{Edition, Method, Phase, StepManifest};
    use canup_tests::steprun::{self, Setting};
    let root = work.join("sysroot");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("opt/canopsis/etc"))?;
    std::fs::copy("/bin/true", root.join("bin/true"))?;
    std::fs::write(root.join("opt/canopsis/etc/bench-4k"), vec![b'x'; 4096])?;
    let sandbox = Sandbox::new(Some(&work.join("compiled-probe")))?;
    let wasm = std::fs::read(guest_wasm("probe"))?;
    let manifest = |id: &str| StepManifest {
        capabilities: CapabilitySet {
            exec: vec![ExecRule {
                program: "/bin/true".into(),
                args: vec![],
                env: vec![],
                users: vec![],
                readonly: false,
                shell: false,
                timeout_seconds: None,
                env_file: None,
            }],
            fs: FsRules { read: vec!["/opt/canopsis/etc/bench-4k".into()], ..FsRules::default() },
            http: vec![],
            database: vec![],
            units: Default::default(),
            compose: Default::default(),
        },
        ..StepManifest::bare(id, Phase::PostUpdate)
    };
    let setting = Setting {
        installed: Version::new(3, 39, 0),
        target: Version::new(3, 40, 0),
        release: Version::new(3, 40, 0),
        edition: Edition::Core,
        method: Method::Packages,
        endpoints: Default::default(),
        settings: Default::default(),
        data: Default::default(),
    };
    let state = work.join("state");
    async fn time_step(sandbox: &Sandbox, wasm: &[u8], step: StepManifest, root: &Path, state: &Path, setting: &Setting, n: usize) -> Result<Duration> {
        let loaded = sandbox.load(&step.id, wasm, &STEP_API)?;
        let mut v = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let (report, _) = steprun::run(sandbox, &loaded, &step, root, state, setting).await;
            v.push(t.elapsed());
            anyhow::ensure!(report.result.is_ok(), "{}: {:?}", step.id, report.result);
        }
        Ok(median(v))
    }
    let empty = time_step(&sandbox, &wasm, manifest("empty"), &root, &state, &setting, 200).await?;
    rows.push(Row::time("2. step: instantiate + call of an empty step", empty, None));
    let pooling = Sandbox::with_allocation(None, Allocation::Pooling { max_memory: canup::config::StepLimits::default().memory })?;
    let pooled = time_step(&pooling, &wasm, manifest("empty"), &root, &state, &setting, 200).await?;
    rows.push(Row::time("2. the same with the pooling allocator", pooled, None));
    rows.push(Row::ratio("2. pooling / on-demand (an upgrade instantiates ~15 steps)", secs(pooled) / secs(empty), None));
    let exec = time_step(&sandbox, &wasm, manifest("exec-true-100"), &root, &state, &setting, 5).await?;
    let mut direct = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..100 {
            std::process::Command::new("/bin/true").output()?;
        }
        direct.push(t.elapsed());
    }
    let (through, direct) = (exec.saturating_sub(empty) / 100, median(direct) / 100);
    rows.push(Row::time("3. exec of /bin/true through the capability (per call)", through, None));
    rows.push(Row::time("3. std::process::Command of /bin/true (per call)", direct, None));
    rows.push(Row::ratio("3. exec overhead: capability / std::process::Command", secs(through) / secs(direct), Some(1.05)));
    let read = time_step(&sandbox, &wasm, manifest("read-4k-1000"), &root, &state, &setting, 5).await?;
    let mut direct = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(std::fs::read(root.join("opt/canopsis/etc/bench-4k"))?);
        }
        direct.push(t.elapsed());
    }
    rows.push(Row::time("3. 4 KB read through fs (per call)", read.saturating_sub(empty) / 1000, Some(Duration::from_micros(20))));
    rows.push(Row::time("3. std::fs::read of 4 KB (per call)", median(direct) / 1000, None));
    Ok(())
}
