//! The sandbox: runs one step component with no ambient authority.
//!
//! Each step gets a fresh `Store` (a trapped instance is dead, and steps must not share
//! state), WASI p2 with no preopens, environment, arguments or sockets (clocks and random
//! stay), and the `canup:step` interfaces, whose every call goes through one capability
//! checkpoint and one audit record. Memory, guest CPU time, wall time and the guest's own
//! output are bounded, and every way a step can stop is mapped to a [`Stop`] an operator can
//! read.
//!
//! Where things are: `bindings.rs` (the generated contract and its error mapping),
//! `host/` (one file per interface: what a step can do through it), `call.rs` (what every
//! host call shares: audit, dry run, journal replay), `limits.rs` (output, memory, CPU bounds
//! and trap classification); the engine, loading and the run are here.

mod bindings;
mod call;
mod dry_run;
mod host;
mod limits;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;
use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::audit::AuditLog;
use crate::backup::Backups;
use crate::cache::CompiledCache;
use crate::capabilities::Grant;
use crate::capabilities::http::Endpoints;
use crate::config::StepLimits;
use crate::journal::StepActions;
use crate::manifest::{Edition, Method, Phase, STEP_API};
use crate::repository::ReleaseData;
use crate::sha256_hex;
use crate::sysroot::Sysroot;
use crate::ui::Ui;
use bindings::{Step, StepPre};
pub use call::{StepState, shell_words};
pub use dry_run::{DryRun, Staged};
pub use host::detect::parse_canopsis_version;
use limits::{BoundedPipe, CpuExceeded, CpuMeter, EPOCH_TICK, MemoryLimiter, classify_trap};

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("step {step}: built for step API {built}, this canup supports {supported}; use a canup of the same major version and at least that minor")]
    ApiMismatch { step: String, built: Version, supported: Version },
    #[error("step {step}: the module is not a valid step component: {why}")]
    Invalid { step: String, why: String },
    #[error("step {step}: the module needs {why}; it was built for another host or a newer step API")]
    Link { step: String, why: String },
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

impl SandboxError {
    /// An engine or cache that cannot be set up is the host's problem (its state directory),
    /// not the module's: the same code under `step run` and `apply`.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            SandboxError::Engine(_) | SandboxError::Cache(_) => crate::exit::ExitCode::Usage,
            SandboxError::ApiMismatch { .. } | SandboxError::Invalid { .. } | SandboxError::Link { .. } => crate::exit::ExitCode::ModuleRefused,
        }
    }
}

/// What a step's run looks like to it: the versions and the install.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub step_id: String,
    pub phase: Phase,
    pub installed: Version,
    pub target: Version,
    pub release: Version,
    /// Unknown (`None`) only while detecting.
    pub edition: Option<Edition>,
    pub method: Option<Method>,
    pub dry_run: bool,
}

/// What a `detect` step reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detected {
    pub installed: Version,
    pub edition: Edition,
    pub method: Method,
}

/// Everything one step run may use besides its own code.
pub struct StepEnv {
    pub grant: Grant,
    pub sysroot: Sysroot,
    pub endpoints: Arc<Endpoints>,
    /// The operator's `[databases]` (the rest come from go-engines-vars.conf).
    pub databases: Arc<crate::capabilities::database::Databases>,
    pub backups: Backups,
    pub audit: Arc<AuditLog>,
    pub ui: Arc<dyn Ui>,
    pub context: StepContext,
    pub limits: StepLimits,
    /// In a dry run: what the steps would have done, and the files as they would be.
    pub recorded: DryRun,
    /// The operator's `[settings]`.
    pub settings: Arc<std::collections::BTreeMap<String, String>>,
    /// The operator's `[answers]` to optional questions (`ui.choose`).
    pub answers: Arc<crate::config::Answers>,
    /// The data files of the step's release (`context.data`).
    pub data: Arc<ReleaseData>,
    /// Under `canup apply`: the journal of the step's changing actions (see [`StepActions`]).
    pub actions: Option<StepActions>,
}

impl StepEnv {
    /// What every caller (apply, `canup step run`, the tests) needs to give; the rest starts
    /// empty (no endpoints, settings or data, default limits) and is set field by field.
    pub fn new(grant: Grant, sysroot: Sysroot, backups: Backups, audit: Arc<AuditLog>, ui: Arc<dyn Ui>, context: StepContext) -> Self {
        Self {
            grant,
            sysroot,
            endpoints: Arc::default(),
            databases: Arc::default(),
            backups,
            audit,
            ui,
            context,
            limits: StepLimits::default(),
            recorded: DryRun::default(),
            settings: Arc::default(),
            answers: Arc::default(),
            data: Arc::default(),
            actions: None,
        }
    }
}

/// Why a step stopped without finishing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Stop {
    #[error("the step returned an error: {0}")]
    Failed(String),
    #[error("the step used more than its CPU time limit of {0:?}")]
    CpuTime(Duration),
    #[error("the step ran past its wall-time limit of {0:?}")]
    WallTime(Duration),
    #[error("the step tried to grow its memory to {wanted} bytes in all, over its limit of {limit} bytes")]
    OutOfMemory { wanted: usize, limit: usize },
    #[error("the step panicked: {0}")]
    Panic(String),
    #[error("the step trapped: {0}")]
    Trap(String),
}

/// The guest's own stdout or stderr, as kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes written beyond the bound and dropped.
    pub dropped: u64,
}

impl Captured {
    /// The bytes as the step wrote them (JSON output, files).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The text as a terminal may show it (see [`crate::ui::visible`]).
    pub fn display(&self) -> String {
        crate::ui::visible(&self.text()).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: String,
    /// What a detect step reported.
    pub detected: Option<Detected>,
    /// Why the step did not do its work, when it said so (`ui.skip`): not an ok.
    pub skipped: Option<String>,
    pub module_sha256: String,
    pub result: Result<(), Stop>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// How instances get their memory. canup uses the default, on-demand allocation: a step is
/// instantiated once per upgrade (about fifteen instantiations in all), and `cargo xtask
/// bench` measured what the pooling allocator would save on them (docs/performance.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    OnDemand,
    /// Slots reserved up front, each with room for `max_memory` bytes of linear memory.
    Pooling {
        max_memory: usize,
    },
}

/// The most of a step's error message kept (a 50 MB error was once printed whole).
const ERROR_BYTES: usize = 8 << 10;

/// A verified, compiled module ready to instantiate.
#[derive(Clone)]
pub struct LoadedStep {
    pre: StepPre<StepState>,
    pub module_sha256: String,
    /// The step API the module imports (its declared one when it imports no `canup:step`
    /// interface).
    pub api: Version,
    pub from_cache: bool,
}

/// A counting semaphore for blocking threads (the compiles run on tokio's blocking pool).
struct CompileGate {
    running: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

struct CompilePermit<'a>(&'a CompileGate);

impl CompileGate {
    fn new(max: usize) -> Self {
        Self { running: std::sync::Mutex::new(0), freed: std::sync::Condvar::new(), max }
    }

    fn enter(&self) -> CompilePermit<'_> {
        // A poisoned lock only means another compile panicked; the count is still right.
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *running >= self.max {
            running = self.freed.wait(running).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        CompilePermit(self)
    }
}

impl Drop for CompilePermit<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        self.0.freed.notify_one();
    }
}

pub struct Sandbox {
    engine: Engine,
    linker: Linker<StepState>,
    cache: Option<CompiledCache>,
    /// At most two Cranelift compiles at a time. Each compile already spreads a module's
    /// functions over the cores (wasmtime's parallel compilation), and the prefetch starts one
    /// task per module: unbounded, their working sets add up (the first run's peak RSS), while
    /// one at a time leaves cores idle on a module's serial parts.
    compiling: CompileGate,
    /// Compiling is the costliest work a module makes the host do, and wasmtime cannot stop
    /// it halfway: its size bounds its time and memory.
    max_module: usize,
    /// How long one compile may take before the load gives up on it (`[limits]
    /// module_compile_seconds`): the compiling thread cannot be stopped, but canup stops
    /// waiting, fails the step and exits, which ends it.
    max_compile: Duration,
}

impl Sandbox {
    /// An engine with epoch interruption, the WASI p2 imports and the step interfaces, and
    /// a compiled-component cache in `cache_dir` when given.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self, SandboxError> {
        Self::with_allocation(cache_dir, Allocation::OnDemand)
    }

    pub fn with_allocation(cache_dir: Option<&Path>, allocation: Allocation) -> Result<Self, SandboxError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if let Allocation::Pooling { max_memory } = allocation {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(8).total_core_instances(64).total_memories(32).total_tables(64).max_memory_size(max_memory);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;
        Step::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("canup-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let cache = cache_dir.map(|d| CompiledCache::open(d, &engine)).transpose()?;
        Ok(Self {
            engine,
            linker,
            cache,
            compiling: CompileGate::new(2),
            max_module: crate::config::StepLimits::default().module,
            max_compile: crate::config::StepLimits::default().compile,
        })
    }

    /// The largest module this sandbox compiles (`[limits] module_kib`).
    pub fn with_max_module(mut self, bytes: usize) -> Self {
        self.max_module = bytes;
        self
    }

    /// How long a compile may take (`[limits] module_compile_seconds`).
    pub fn with_max_compile(mut self, limit: Duration) -> Self {
        self.max_compile = limit;
        self
    }

    /// Compiles on a thread of its own, waiting at most `max_compile` for it.
    fn compile(&self, step: &str, wasm: &[u8]) -> Result<Component, SandboxError> {
        let (engine, bytes) = (self.engine.clone(), wasm.to_vec());
        let (done, compiled) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("compile {step}"))
            .spawn(move || {
                let _ = done.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("no thread to compile it: {e}") })?;
        match compiled.recv_timeout(self.max_compile) {
            Ok(c) => c.map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("{e:#}") }),
            Err(_) => Err(SandboxError::Invalid {
                step: step.to_owned(),
                why: format!("compiling it took more than {} s (module_compile_seconds in canup.toml's [limits]); abandoned", self.max_compile.as_secs_f64()),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) and links a module. A module built for another
    /// major step API is refused here, before anything of it runs.
    pub fn load(&self, step: &str, wasm: &[u8], declared_api: &Version) -> Result<LoadedStep, SandboxError> {
        let mismatch = |built: &Version| SandboxError::ApiMismatch { step: step.to_owned(), built: built.clone(), supported: STEP_API };
        // Compiling is the costliest thing a module makes the host do (tens of seconds and
        // gigabytes for tens of megabytes): bounded before it starts.
        if wasm.len() > self.max_module {
            return Err(SandboxError::Invalid {
                step: step.to_owned(),
                why: format!(
                    "it is {} bytes, over the limit of {} bytes for a step module (module_kib in canup.toml's [limits]; published modules are a few hundred kilobytes); refused before compiling",
                    wasm.len(),
                    self.max_module
                ),
            });
        }
        // Same major, and no newer minor: the component model's semver matching would link
        // a 1.2 module that uses only 1.1's functions, but its author relied on 1.2.
        let runnable = |v: &Version| v.major == STEP_API.major && v.minor <= STEP_API.minor;
        if !runnable(declared_api) {
            return Err(mismatch(declared_api));
        }
        let sha = sha256_hex(wasm);
        let cached = match &self.cache {
            Some(c) => c.load(&self.engine, &sha)?,
            None => None,
        };
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = {
                    let _permit = self.compiling.enter();
                    self.compile(step, wasm)?
                };
                if let Some(cache) = &self.cache
                    && let Err(e) = cache.store(&sha, &c)
                {
                    tracing::warn!("{e}; continuing without caching");
                }
                c
            }
        };
        let mut api = declared_api.clone();
        for (name, _) in component.component_type().imports(&self.engine) {
            if let Some(version) = name.strip_prefix("canup:step/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v) {
                let v = Version::parse(version).map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("import {name}: {e}") })?;
                if !runnable(&v) {
                    return Err(mismatch(&v));
                }
                api = v;
            }
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| SandboxError::Link { step: step.to_owned(), why: format!("{e:#}") })?;
        let pre = StepPre::new(pre).map_err(|e| SandboxError::Invalid { step: step.to_owned(), why: format!("{e:#}") })?;
        Ok(LoadedStep { pre, module_sha256: sha, api, from_cache })
    }

    /// Runs a loaded step in a fresh store. Never panics on guest behaviour: every way the
    /// guest can stop is in the report.
    pub async fn run(&self, step: &LoadedStep, env: StepEnv) -> StepReport {
        let mut limits = env.limits;
        // A command the step declares long (a migration: hours) must not outlive its step's
        // wall time: the step gets that command's limit and a minute beside it.
        if let Some(longest) = env.grant.longest_declared_exec(&limits.exec) {
            limits.wall = limits.wall.max(longest + Duration::from_secs(60));
        }
        let step_id = env.context.step_id.clone();
        let stdout = BoundedPipe::new(limits.guest_output);
        let stderr = BoundedPipe::new(limits.guest_output);
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
        let started = Instant::now();
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory),
            env,
            cpu: CpuMeter::default(),
            detected: None,
            skipped: None,
            ui_used: 0,
        };
        let engine = self.engine.clone();
        let pre = step.pre.clone();
        let guest_stderr = stderr.clone();
        // The step runs as a task of its own and the wall-time timer in this one: a host call
        // that blocks its thread (a terminal that stopped reading, a hung network filesystem)
        // cannot hold the timer too, since the runtime's other thread drives it. The task is
        // aborted at its next await when the time is up; whatever it still holds is dropped
        // then.
        let task = tokio::spawn(async move {
            let mut store = Store::new(&engine, state);
            store.limiter(|s| &mut s.limiter);
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|mut ctx| {
                let s = ctx.data_mut();
                if s.cpu.tick() > s.env.limits.cpu {
                    return Err(CpuExceeded.into());
                }
                // Yielding lets the runtime run the wall-time timer even while the guest spins.
                Ok(UpdateDeadline::Yield(1))
            });
            let outcome = async {
                let instance = pre.instantiate_async(&mut store).await?;
                tracing::trace!("instantiated");
                instance.call_run(&mut store).await
            }
            .await;
            let result = match outcome {
                Ok(Ok(())) => Ok(()),
                // A step's own words reach the operator's terminal: shown, never obeyed.
                // The step's own text, shown and kept in the journal and history: bounded like its messages.
                Ok(Err(message)) => Err(Stop::Failed(crate::ui::visible(&crate::ui::cut_middle(&message, ERROR_BYTES)).into_owned())),
                Err(e) => Err(classify_trap(&e, store.data().limiter.refused, &limits, &guest_stderr)),
            };
            let data = store.data_mut();
            (result, data.detected.take(), data.skipped.take())
        });
        let abort = task.abort_handle();
        let (result, detected, skipped) = match tokio::time::timeout(limits.wall, task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => (Err(Stop::Trap(format!("the host failed while running the step: {e}; this is a canup bug, please report it"))), None, None),
            Err(_) => {
                abort.abort();
                (Err(Stop::WallTime(limits.wall)), None, None)
            }
        };
        StepReport {
            step: step_id,
            detected,
            skipped,
            module_sha256: step.module_sha256.clone(),
            result,
            stdout: stdout.take(),
            stderr: stderr.take(),
            duration: started.elapsed(),
        }
    }
}
