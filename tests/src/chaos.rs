//! The crash campaign (`cargo xtask chaos`, and a reduced one in `tests/tests/chaos.rs`): the
//! demo upgrade (3.38.0 → 3.40.0, cat, packages) killed with SIGKILL at random moments, then
//! `canup apply` run again to completion, and the end state compared with an uninterrupted
//! run's.
//!
//! Each trial starts from a fresh simulated host and an empty state directory, so kills land
//! in every part of a run: repository verification, module compilation, a step's command,
//! between a file change and its journal record. The moments are drawn from a seeded
//! generator, printed, so a failing trial can be replayed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::canopsis_api::CanopsisApi;
use crate::rabbitmq::Admin;
use crate::simhost::{Edition, Method, SimHost, Spec};

/// What the campaign needs: the binaries and a published repository served on loopback.
pub struct Setup {
    pub canup: PathBuf,
    pub stub: PathBuf,
    pub repo: PathBuf,
    pub repo_url: String,
    pub work: PathBuf,
}

/// Simulator files that count repeated actions (restarts, reloads): running those commands
/// again is their documented behaviour, not a change of state.
const COUNTERS: &[&str] = &["canoctl-restarts", "daemon-reloads", "systemctl-actions"];

/// The end of a run, as compared.
#[derive(Debug, Clone, PartialEq)]
pub struct EndState {
    /// Every file of the simulated host but the call log and the counters, the host's root
    /// written as ROOT.
    pub tree: BTreeMap<String, String>,
    /// The changing commands canup ran on the host, in order (queries left out).
    pub changes: Vec<String>,
}

fn end_state(sim: &SimHost) -> Result<EndState> {
    let root = sim.root().display().to_string();
    let tree = sim
        .snapshot()?
        .into_iter()
        .filter(|(path, _)| !COUNTERS.iter().any(|c| path.ends_with(c)) && !path.contains("canup-sim/block"))
        .map(|(path, content)| (path, content.replace(&root, "ROOT")))
        .collect();
    // Commands canup ran: a nested call (the canopsinit that `su - canopsis -c` starts, as
    // canopsis) belongs to its parent.
    let changes = sim
        .calls()?
        .iter()
        .filter(|c| c.user == "root" && !(c.program == "rpm" || c.args.first().is_some_and(|a| a == "is-enabled")))
        .map(|c| c.line())
        .collect();
    Ok(EndState { tree, changes })
}

struct Host {
    sim: SimHost,
    config: PathBuf,
    _api: CanopsisApi,
}

async fn host(setup: &Setup, name: &str) -> Result<Host> {
    let dir = setup.work.join(name);
    let sim = SimHost::create(
        &dir.join("root"),
        &Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() },
        &setup.stub,
    )?;
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.join("canup.toml");
    crate::write_site_config(&config, &setup.repo_url, &setup.repo, &dir.join("state"), crate::OPERATOR_POLICY, &api)?;
    // 3.39.0 unbinds Engine_che from the shared broker: every run starts with it bound.
    Admin::new().bind_che().await?;
    Ok(Host { sim, config, _api: api })
}

fn apply(setup: &Setup, h: &Host) -> Command {
    let mut c = Command::new(&setup.canup);
    c.arg("--config").arg(&h.config).arg("--sysroot").arg(h.sim.root()).args(["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// An uninterrupted run: the reference end state and how long the run took. With `warm`,
/// the compiled modules of `cold-reference` are there from the start.
pub async fn reference(setup: &Setup, name: &str, warm: bool) -> Result<(EndState, Duration)> {
    let h = host(setup, name).await?;
    if warm {
        warm_up(setup, name)?;
    }
    let t = Instant::now();
    let out = apply(setup, &h).output()?;
    let took = t.elapsed();
    ensure!(out.status.success(), "the uninterrupted run failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((end_state(&h.sim)?, took))
}

/// Gives host `name` the compiled-module cache of the cold reference run (copied with its
/// owner and mode, which canup checks), so that its run goes straight to the steps.
fn warm_up(setup: &Setup, name: &str) -> Result<()> {
    let state = setup.work.join(name).join("state");
    std::fs::create_dir_all(&state)?;
    let status = Command::new("cp").arg("-a").arg(setup.work.join("cold-reference/state/cache")).arg(&state).status()?;
    ensure!(status.success(), "copying the compiled cache into {}", state.display());
    Ok(())
}

/// One trial's story.
#[derive(Debug)]
pub struct Trial {
    pub moment: Moment,
    /// When the kill came, after canup started.
    pub delay: Duration,
    /// False when canup had already finished at the kill's moment.
    pub killed: bool,
    /// Runs of `canup apply` after the kill until one succeeded.
    pub resumes: u32,
    /// Changing commands that ran more often than in the reference (none may: a command in
    /// flight at the kill is waited for, or its receipt used, by the resumed run).
    pub repeated: Vec<String>,
    /// Commands in flight at the kill whose outcome the resumed run took from their receipt.
    pub in_flight: Vec<String>,
    /// Whether the resumed run found such a command still running and waited for it.
    pub waited: bool,
    pub state: EndState,
}

/// When a trial kills canup.
#[derive(Debug, Clone, Copy)]
pub enum Moment {
    /// This long after canup started.
    After(Duration),
    /// While the first call of `program` (a changing command) runs: the simulated program is
    /// held until canup is dead, then let go; with `resume_first`, only once the resumed run
    /// had time to find it still running.
    InCommand { program: &'static str, resume_first: bool },
}

/// Changing commands of the demo whose first call changes something (so a kill in one is a
/// kill in a changing command): the campaign's targeted kills cycle through them.
const KILL_IN: &[&str] = &["yum", "su", "canoctl", "init"];

pub async fn trial(setup: &Setup, index: usize, moment: Moment, warm: bool) -> Result<Trial> {
    let name = format!("trial-{index}");
    let h = host(setup, &name).await?;
    if warm {
        warm_up(setup, &name)?;
    }
    let block = |program: &str| h.sim.path(&format!("/var/lib/canup-sim/block-{program}"));
    if let Moment::InCommand { program, .. } = moment {
        h.sim.write(&format!("/var/lib/canup-sim/block-{program}"), "")?;
    }
    let mut child = apply(setup, &h).spawn()?;
    let start = Instant::now();
    let mut killed = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let now = match moment {
            Moment::After(delay) => start.elapsed() >= delay,
            Moment::InCommand { program, .. } => h.sim.path(&format!("/var/lib/canup-sim/blocked-{program}")).exists(),
        };
        if now {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(120), "trial {index}: the kill's moment never came ({moment:?})");
        std::thread::sleep(Duration::from_micros(200));
    }
    let delay = start.elapsed();
    if child.try_wait()?.is_none() {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)?;
        killed = true;
    }
    // The held program goes on as a real one would: at once, or while the resumed run waits.
    let release = match moment {
        Moment::After(_) => None,
        Moment::InCommand { program, resume_first: false } => {
            std::fs::remove_file(block(program))?;
            None
        }
        Moment::InCommand { program, resume_first: true } => {
            let file = block(program);
            Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                std::fs::remove_file(file)
            }))
        }
    };
    child.wait()?;
    let mut resumes = 0;
    let (mut in_flight, mut waited) = (Vec::new(), false);
    loop {
        resumes += 1;
        let out = apply(setup, &h).stdout(Stdio::piped()).output()?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        in_flight.extend(said.lines().filter_map(|l| {
            l.split_once("(it finished after the interruption").map(|(_, rest)| rest.split_once("): ").map_or(rest, |(_, cmd)| cmd).trim().to_owned())
        }));
        waited |= said.contains("which the interrupted run started and is still running");
        if out.status.success() {
            break;
        }
        if resumes >= 3 {
            bail!("trial {index} (kill after {delay:?}): canup apply still fails after {resumes} runs: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    if let Some(release) = release {
        release.join().map_err(|_| anyhow::anyhow!("releasing the held program panicked"))??;
    }
    let state = end_state(&h.sim)?;
    Ok(Trial { moment, delay, killed, resumes, repeated: Vec::new(), in_flight, waited, state })
}

/// Whether `trial` ended where the uninterrupted run did: the same tree, and every changing
/// command exactly as often as in the reference run (none lost, none repeated).
pub fn compare(reference: &EndState, trial: &mut Trial) -> Result<(), String> {
    if trial.state.tree != reference.tree {
        let differ: Vec<&String> =
            reference.tree.keys().chain(trial.state.tree.keys()).filter(|k| reference.tree.get(*k) != trial.state.tree.get(*k)).collect();
        return Err(format!("the end state differs in {differ:?}"));
    }
    fn count(list: &[String]) -> BTreeMap<&str, usize> {
        list.iter().fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c.as_str()).or_default() += 1;
            m
        })
    }
    let (want, got) = (count(&reference.changes), count(&trial.state.changes));
    for (cmd, n) in &want {
        let seen = got.get(cmd).copied().unwrap_or(0);
        if seen < *n {
            return Err(format!("{cmd:?} ran {seen} times, the uninterrupted run ran it {n} times"));
        }
    }
    for (cmd, n) in &got {
        let expected = want.get(cmd).copied().unwrap_or(0);
        if expected == 0 {
            return Err(format!("{cmd:?} ran, the uninterrupted run never ran it"));
        }
        trial.repeated.extend(std::iter::repeat_n(cmd.to_string(), n.saturating_sub(expected)));
    }
    if !trial.repeated.is_empty() {
        return Err(format!("ran more often than in the uninterrupted run: {:?}", trial.repeated));
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so that a campaign is replayed from its seed.
pub struct Moments(u64);

impl Moments {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A moment in `[0, span)`.
    pub fn next(&mut self, span: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_nanos(r % (span.as_nanos().max(1) as u64))
    }
}

/// Runs `kills` trials and prints one line per trial; the error lists the trials that failed.
/// The random moments spread over `span` times the reference run's duration: beyond 1.0 some
/// kills come after the end (the campaign checks those too); well below 1.0 they land inside
/// the run even when a trial runs faster than the reference (the real dnf's time varies).
pub async fn campaign(setup: &Setup, kills: usize, seed: u64, span: f64) -> Result<Vec<Trial>> {
    let (reference_state, cold) = reference(setup, "cold-reference", false).await.context("the uninterrupted reference run")?;
    let (warm_state, warm) = reference(setup, "warm-reference", true).await.context("the uninterrupted reference run with compiled modules")?;
    ensure!(warm_state == reference_state, "the run from compiled modules ended elsewhere than the cold one");
    println!(
        "chaos: reference runs {cold:?} (compiling every module) and {warm:?} (compiled), {} changing commands; {kills} kills, seed {seed}",
        reference_state.changes.len()
    );
    let reference = reference_state;
    let mut moments = Moments::new(seed);
    let mut trials = Vec::new();
    let mut failures = Vec::new();
    for i in 0..kills {
        // Even trials start cold (kills land in verification and compilation too), odd ones
        // from compiled modules (kills land among the steps' commands and file changes).
        // Every fifth trial kills canup inside a changing command on purpose (random moments
        // seldom fall in one: the simulated commands take milliseconds).
        let warm_trial = i % 2 == 1;
        let span = (if warm_trial { warm } else { cold }).mul_f64(span);
        let moment = if i % 5 == 4 {
            Moment::InCommand { program: KILL_IN[(i / 5) % KILL_IN.len()], resume_first: (i / 5) % 2 == 1 }
        } else {
            Moment::After(moments.next(span))
        };
        let mut t = trial(setup, i, moment, warm_trial).await?;
        let delay = t.delay;
        let verdict = compare(&reference, &mut t);
        println!(
            "chaos: trial {i:>2} ({}): kill {} {:>7.1} ms{} → {} resume(s), {}{}{}",
            if warm_trial { "compiled" } else { "cold" },
            match moment {
                Moment::After(_) => "after".to_owned(),
                Moment::InCommand { program, .. } => format!("in {program}, after"),
            },
            delay.as_secs_f64() * 1000.0,
            if t.killed { "" } else { " (already finished)" },
            t.resumes,
            if verdict.is_ok() { "same end state" } else { "DIFFERENT" },
            if t.repeated.is_empty() { String::new() } else { format!(", ran again: {}", t.repeated.join(", ")) },
            if t.in_flight.is_empty() {
                String::new()
            } else {
                format!(", in flight at the kill (receipt used{}): {}", if t.waited { " after waiting" } else { "" }, t.in_flight.join(", "))
            }
        );
        if let Err(e) = verdict {
            failures.push(format!("trial {i} (kill after {delay:?}): {e}"));
        }
        trials.push(t);
    }
    let same = kills - failures.len();
    let in_flight = trials.iter().filter(|t| !t.in_flight.is_empty()).count();
    let waited = trials.iter().filter(|t| t.waited).count();
    println!(
        "chaos: {same}/{kills} identical end states (seed {seed}); {in_flight} kills hit a changing command, each run once: its outcome taken from the receipt ({waited} of them still running when the re-run came, and waited for)"
    );
    if !failures.is_empty() {
        bail!("{} trials ended elsewhere than the uninterrupted run:\n  {}", failures.len(), failures.join("\n  "));
    }
    Ok(trials)
}

/// The directory of a campaign under the target directory, emptied.
pub fn work_dir(name: &str) -> Result<PathBuf> {
    let dir = crate::target_dir().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn published(repo: &Path) -> Result<()> {
    crate::publish_steps(&crate::canup_bin(), repo, &crate::target_dir().join("dev-keys")).map(|_| ())
}
