//! Bench items 4 and 5: the demo upgrade (3.38.0 → 3.40.0, cat, packages) by `canup apply`
//! against the same mutating commands run by a bash script generated from canup's own dry-run
//! output (the commands it would run, queries included), and the peak RSS of `canup apply`.
//!
//! Both sides start from a fresh simulated host, with the Engine_che binding restored in the
//! real RabbitMQ, and must end with the same mutating calls in the simulator's log: the
//! comparison is of the same work. What canup adds on top is its own: verifying the signed
//! repository, detection, the plan, the sandbox, the journal and backups (fsync'd), the drain
//! and API checks. One wait is part of the work on both sides: the drain check's confirming
//! poll comes one RabbitMQ statistics interval after the first (a check that polls once can
//! call a loaded queue empty), so the script sleeps that interval between the two polls too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use canup_tests::canopsis_api::CanopsisApi;
use canup_tests::rabbitmq::{self, Admin};
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::simhost::{Edition, Method, SimHost, Spec};

/// What `cargo xtask bench` built for the comparison.
pub struct Inputs {
    pub canup: PathBuf,
    pub stub: PathBuf,
    pub repo: PathBuf,
}

pub struct Figures {
    pub apply_cold: Duration,
    pub apply_warm: Duration,
    pub bash: Duration,
    pub peak_rss_bytes: u64,
    pub commands: usize,
}

struct Fresh {
    sim: SimHost,
    api: CanopsisApi,
    config: PathBuf,
    target: String,
}

/// An upgrade measured against its bash equivalent: the demo's 3.38.0 → 3.40.0, and the
/// catalogue's 23.04.1 → 23.04.14.
pub struct Scenario {
    pub name: &'static str,
    pub spec: Spec,
    pub target: &'static str,
}

impl Scenario {
    /// The demo: Canopsis Pro 3.38.0 → 3.40.0, packages on CentOS 7.
    pub fn demo() -> Self {
        Self { name: "demo", spec: Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }, target: "3.40.0" }
    }

    /// A long path of the catalogue: Pro 23.04.1 → 23.04.14 on RHEL 8 (12 releases, 23.04.7's
    /// canopsis.toml key, 23.04.8's engine-service start, the unit restarts).
    pub fn catalogue_23_04() -> Self {
        Self {
            name: "23.04",
            spec: Spec { version: "23.04.1".into(), edition: Edition::Cat, method: Method::Packages, os: canup_tests::simhost::Os::Rhel8, ..Spec::default() },
            target: "23.04.14",
        }
    }
}

const RUNS: usize = 5;

async fn fresh(work: &Path, scenario: &Scenario, name: &str, stub: &Path, repo_url: &str, repo: &Path, state: &Path) -> Result<Fresh> {
    let dir = work.join(format!("{}-{name}", scenario.name));
    let sim = SimHost::create(&dir.join("root"), &scenario.spec, stub)?;
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.join("canup.toml");
    canup_tests::write_site_config(&config, repo_url, repo, state, canup_tests::OPERATOR_POLICY, &api)?;
    // 3.39.0 unbinds Engine_che: every run starts from the binding in place.
    Admin::new().bind_che().await?;
    Ok(Fresh { sim, api, config, target: scenario.target.to_owned() })
}

fn canup(inputs: &Inputs, f: &Fresh, extra: &[&str]) -> Command {
    let mut c = Command::new(&inputs.canup);
    c.arg("--config").arg(&f.config).arg("--sysroot").arg(f.sim.root()).args(["apply", "--to", &f.target, "--yes", "--accept-manual"]).args(extra);
    c
}

/// Every call in the simulator's log, queries included: what both sides must share.
/// The host's recorded calls. A Redis client is compared by the commands it was given: canup
/// connects it with `-h/-p/-n` and `AUTH` on its input, the note's way is `-u $CPS_REDIS_URL`;
/// the connection's form is not the work.
fn calls(sim: &SimHost) -> Result<Vec<String>> {
    Ok(sim
        .calls()?
        .iter()
        .map(|c| match (&*c.program, &c.input) {
            ("redis-cli", Some(input)) => format!("redis-cli <<< {}", input.lines().filter(|l| !l.starts_with("AUTH ")).collect::<Vec<_>>().join("; ")),
            _ => c.line(),
        })
        .collect())
}

fn timed(mut cmd: Command) -> Result<Duration> {
    let shown = format!("{cmd:?}");
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {shown}"))?;
    let elapsed = t.elapsed();
    ensure!(out.status.success(), "{shown} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(elapsed)
}

/// The bash script an operator would type from `canup apply --dry-run`'s list of changes.
fn script_from_dry_run(dry_run_stdout: &str, stats_interval: Duration) -> Result<(String, usize)> {
    let (_, changes) = dry_run_stdout
        .split_once("The real run would make these changes, in order (queries ran for real):\n")
        .context("no list of changes in the dry-run output")?;
    let mut script = String::from(
        "#!/bin/bash\n# Generated from `canup apply --dry-run`: the same changes, run by bash.\nset -euo pipefail\nROOT=\"$1\"\n\
         # The release notes' way of exporting the engines' variables.\nset -o allexport; source \"$ROOT/opt/canopsis/etc/go-engines-vars.conf\"; set +o allexport\n\
         BACKUP=\"$(mktemp -d)\"; trap 'rm -rf \"$BACKUP\"' EXIT\n",
    );
    let mut commands = 0;
    let mut heredoc_open = false;
    let mut previous_query = None;
    // Whether the current run of identical drain polls has had its window already.
    let mut waited = false;
    for line in changes.lines() {
        // canup prints each change at two spaces; a write's content follows at four.
        if let Some(content) = line.strip_prefix("    ") {
            ensure!(heredoc_open, "content line outside a write: {line:?}");
            writeln!(script, "{content}")?;
            continue;
        }
        if heredoc_open {
            script.push_str("CANUP_EOF\n");
            heredoc_open = false;
        }
        let Some(entry) = line.strip_prefix("  ") else { continue };
        let last_query = previous_query.take();
        if let Some(cmd) = entry.strip_prefix("run: ") {
            ensure!(!cmd.ends_with(')') || !cmd.contains(" (as "), "commands run as another user are not generated: {cmd}");
            // Environment assignments are shown masked (`K=…`); the script exported the real ones above.
            let words: Vec<&str> = cmd.split(' ').skip_while(|w| w.contains("=…")).collect();
            let (program, args) = words.split_first().context("empty command")?;
            ensure!(program.starts_with('/'), "program {program} is not absolute");
            writeln!(script, "\"$ROOT\"{program} {}", args.join(" "))?;
            commands += 1;
        } else if let Some(query) = entry.strip_prefix("query: ") {
            // A query may answer "no" with its exit status (systemctl is-enabled); the step reads it.
            match query.split_once(" on endpoint ") {
                Some((request, endpoint)) => {
                    let (method, path) = request.split_once(' ').context("query without a path")?;
                    // The drain check's confirming poll: RabbitMQ's counts are statistics, which
                    // show a change up to two statistics intervals late, so a check that means
                    // what it says reads an idle queue empty again only after that window
                    // (steps/drain: two intervals and a second). The script waits as canup does.
                    let repeated = last_query == Some(query);
                    if path.starts_with("/api/queues/") && repeated && !waited {
                        writeln!(script, "sleep {}", (2 * stats_interval + Duration::from_secs(1)).as_secs_f64())?;
                    }
                    waited = repeated;
                    writeln!(script, "curl -s -o /dev/null -X {method} {}{path}\" || true", endpoint_base(endpoint)?)?;
                }
                None => {
                    let (program, args) = query.split_once(' ').unwrap_or((query, ""));
                    writeln!(script, "\"$ROOT\"{program} {args} >/dev/null || true")?;
                }
            }
            commands += 1;
            previous_query = Some(query);
        } else if let Some((verb, endpoint)) =
            entry.strip_prefix("query on database ").map(|e| ("query", e)).or_else(|| entry.strip_prefix("run on database ").map(|e| ("run", e)))
        {
            // A database script: its lines follow at four spaces, fed to the engine's client
            // with the installation's URL, as the notes write it (`redis-cli -u $CPS_REDIS_URL`).
            let client = match endpoint.trim_end_matches(':') {
                "redis" => "\"$ROOT\"/usr/bin/redis-cli -u \"$CPS_REDIS_URL\"",
                "postgres" => "\"$ROOT\"/usr/bin/psql \"$CPS_POSTGRES_URL\" -v ON_ERROR_STOP=1",
                "mongo" => "\"$ROOT\"/usr/bin/mongo \"$CPS_MONGO_URL\"",
                other => bail!("no client for database endpoint {other}"),
            };
            let tolerate = if verb == "query" { " >/dev/null || true" } else { "" };
            writeln!(script, "{client} <<'CANUP_EOF'{tolerate}")?;
            heredoc_open = true;
            commands += 1;
        } else if let Some(rest) = entry.strip_prefix("write ") {
            let path = rest.split(" (").next().context("write without a path")?;
            writeln!(script, "cat > \"$ROOT{path}\" <<'CANUP_EOF'")?;
            heredoc_open = true;
        } else if let Some(rest) = entry.strip_prefix("append to ") {
            writeln!(script, "cat >> \"$ROOT{}\" <<'CANUP_EOF'", rest.trim_end_matches(':'))?;
            heredoc_open = true;
        } else if let Some(rest) = entry.strip_prefix("create directory ") {
            writeln!(script, "mkdir -p \"$ROOT{}\"", rest.split(" (").next().context("create directory without a path")?)?;
        } else if let Some(path) = entry.strip_prefix("remove ") {
            writeln!(script, "rm -f \"$ROOT{path}\"")?;
        } else if let Some(rest) = entry.strip_prefix("back up the installed packages: ") {
            // The backup the vendor's guides ask for before an update, as canup takes it: the
            // package list, and (below) a copy of the configuration directories.
            let (command, _) = rest.split_once(" > ").context("a package list without its file")?;
            let words: Vec<String> = command.split(' ').map(|w| format!("'{w}'")).collect();
            let (program, args) = words.split_first().context("empty command")?;
            writeln!(script, "\"$ROOT\"{} {} > \"$BACKUP/packages.txt\"", program.trim_matches('\''), args.join(" "))?;
            commands += 1;
        } else if let Some(rest) = entry.strip_prefix("back up /") {
            let dir = format!("/{}", rest.split(" to ").next().context("a directory without its destination")?);
            writeln!(script, "mkdir -p \"$BACKUP/config{dir}\" && cp -a \"$ROOT{dir}/.\" \"$BACKUP/config{dir}/\"")?;
        } else if let Some(rest) = entry.strip_prefix("send: ") {
            let mut parts = rest.splitn(5, ' ');
            let (method, path, _, _, endpoint) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next());
            let (method, path, endpoint) = (method.context("method")?, path.context("path")?, endpoint.context("endpoint")?);
            let (endpoint, body) = match endpoint.split_once(" with body ") {
                Some((e, b)) => (e, format!(" -H 'content-type: application/json' -d '{}'", b.replace('\'', r"'\''"))),
                None => (endpoint, String::new()),
            };
            writeln!(script, "curl -sf -o /dev/null -X {method}{body} {}{path}\"", endpoint_base(endpoint)?)?;
            commands += 1;
        } else {
            bail!("unknown change in the dry-run output: {entry:?}");
        }
    }
    if heredoc_open {
        script.push_str("CANUP_EOF\n");
    }
    Ok((script, commands))
}

/// curl's credentials and the start of the URL of an endpoint (the script's environment has them).
fn endpoint_base(endpoint: &str) -> Result<&'static str> {
    Ok(match endpoint {
        "rabbitmq" => "-u \"$RABBITMQ_AUTH\" \"$RABBITMQ_URL",
        "canopsis-api" => "-u \"$API_AUTH\" \"$API_URL",
        other => bail!("no URL for endpoint {other}"),
    })
}

fn peak_rss_of_children() -> Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // Linux reports kilobytes.
    Ok(usage.max_rss() as u64 * 1024)
}

pub async fn measure(work: &Path, inputs: &Inputs, scenario: &Scenario) -> Result<Figures> {
    Admin::new().setup_canopsis_once().await?;
    let url = serve_repo(inputs.repo.clone(), Control::default()).await;
    let state = work.join("state");

    // First run: empty state (nothing compiled yet), as on a machine that never ran canup.
    let first = fresh(work, scenario, "cold", &inputs.stub, &url, &inputs.repo, &state).await?;
    let apply_cold = timed(canup(inputs, &first, &[]))?;
    // Nothing but canup has run as a child so far: the largest child is canup itself.
    let peak_rss_bytes = peak_rss_of_children()?;
    let reference = calls(&first.sim)?;
    ensure!(
        first.api.requests().iter().any(|r| r.path == "/api/internal/app_info" || r.path == "/api/v4/app-info"),
        "the API check did not reach the simulated API"
    );

    let mut warm = Vec::new();
    for i in 0..RUNS {
        let f = fresh(work, scenario, &format!("warm-{i}"), &inputs.stub, &url, &inputs.repo, &state).await?;
        warm.push(timed(canup(inputs, &f, &[]))?);
        ensure!(calls(&f.sim)? == reference, "run {i} made other changes than the first");
    }

    // For a profile of one warm run: CANUP_BENCH_WRAP="strace -f -c -w -o /tmp/apply.strace"
    // (or "perf record -g -o …") runs it under that command, outside the timings.
    if let Ok(wrap) = std::env::var("CANUP_BENCH_WRAP") {
        let f = fresh(work, scenario, "profiled", &inputs.stub, &url, &inputs.repo, &state).await?;
        let inner = canup(inputs, &f, &[]);
        let mut words = wrap.split_whitespace();
        let mut c = Command::new(words.next().context("CANUP_BENCH_WRAP is empty")?);
        c.args(words).arg(inner.get_program()).args(inner.get_args());
        let t = Instant::now();
        let out = c.stdin(Stdio::null()).output()?;
        eprintln!("profiled run: {:?} ({}):\n{}", t.elapsed(), out.status, String::from_utf8_lossy(&out.stderr));
    }

    let dry = fresh(work, scenario, "dry-run", &inputs.stub, &url, &inputs.repo, &work.join("dry-state")).await?;
    let out = canup(inputs, &dry, &["--dry-run"]).output()?;
    ensure!(out.status.success(), "dry run failed: {}", String::from_utf8_lossy(&out.stderr));
    let (script, commands) = script_from_dry_run(&String::from_utf8_lossy(&out.stdout), Duration::from_millis(rabbitmq::STATS_INTERVAL_MS))?;
    let script_path = work.join(format!("{}-upgrade.sh", scenario.name));
    std::fs::write(&script_path, &script)?;

    let mut bash = Vec::new();
    for i in 0..RUNS {
        let f = fresh(work, scenario, &format!("bash-{i}"), &inputs.stub, &url, &inputs.repo, &work.join("unused")).await?;
        let mut c = Command::new("bash");
        c.arg(&script_path)
            .arg(f.sim.root())
            .env("RABBITMQ_URL", rabbitmq::MANAGEMENT)
            .env("RABBITMQ_AUTH", format!("{}:{}", rabbitmq::USER, rabbitmq::PASSWORD))
            .env("API_URL", &f.api.url)
            .env("API_AUTH", format!("root:{}", canup_tests::canopsis_api::PASSWORD));
        bash.push(timed(c)?);
        ensure!(
            calls(&f.sim)? == reference,
            "the script ({}) made other changes than canup:\n{:#?}\nvs\n{reference:#?}",
            script_path.display(),
            calls(&f.sim)?
        );
    }
    Admin::new().bind_che().await?;
    Ok(Figures { apply_cold, apply_warm: crate::median(warm), bash: crate::median(bash), peak_rss_bytes, commands })
}
