//! The bounds of a step run: its own output, memory, guest CPU time (the epoch callback), and
//! how a trap is told apart from a limit reached.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::{Captured, Stop};
use crate::config::StepLimits;

/// How often the epoch advances: the granularity of the CPU limit and of yielding to the
/// runtime (which is what lets the wall-time limit interrupt a spinning guest).
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A guest output stream that keeps the first `limit` bytes and counts the rest. It never
/// refuses a write: a full pipe would make the guest's `println!` panic (and trap), so that
/// a chatty step would fail for a reason that is not its own. It is a WASI output stream
/// itself (always ready, writes are a memcpy) because the generic async adapter costs a task
/// hand-off per line: 200,000 lines took 17 s through it.
#[derive(Clone)]
pub(super) struct BoundedPipe {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
}

impl BoundedPipe {
    pub(super) fn new(limit: usize) -> Self {
        Self { inner: Arc::default(), limit }
    }

    pub(super) fn take(&self) -> Captured {
        self.inner.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    /// The bytes kept so far, as text (for telling a panic from a trap).
    pub(super) fn text(&self) -> String {
        self.inner.lock().map(|c| c.text()).unwrap_or_default()
    }

    fn push(&self, buf: &[u8]) {
        if let Ok(mut c) = self.inner.lock() {
            let room = self.limit.saturating_sub(c.bytes.len());
            let keep = buf.len().min(room);
            c.bytes.extend_from_slice(&buf[..keep]);
            c.dropped += (buf.len() - keep) as u64;
        }
    }
}

impl AsyncWrite for BoundedPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Memory bound with a record of the refused size, so the trap can be reported as "out of
/// memory" rather than as the allocator's `unreachable`. The bound is on the sum of every
/// linear memory of the step (a component may hold many: each under the limit, all together
/// far over it), and the numbers of memories, tables and instances are bounded too.
pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    pub(super) refused: Option<usize>,
    /// Bytes of linear memory the step's instances hold now.
    pub(super) total: usize,
}

impl MemoryLimiter {
    pub(super) fn new(limit: usize) -> Self {
        Self { limit, refused: None, total: 0 }
    }
}

/// A step's component is one or two core modules with a memory each, plus WASI's adapter:
/// these leave room for that and nothing like a swarm.
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 32;
const MAX_INSTANCES: usize = 32;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.limit {
            self.refused = Some(total);
            return Err(wasmtime::Error::msg(format!("memory limit of {} bytes reached", self.limit)));
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

/// The error the epoch callback raises when the guest's CPU budget is spent.
#[derive(Debug, Error)]
#[error("CPU time limit exceeded")]
pub(super) struct CpuExceeded;

/// Guest CPU time, measured from the epoch callback.
///
/// The callback runs once per tick *while guest code runs*. Consecutive callbacks a tick or so
/// apart mean the guest computed the whole time; a long gap means it was suspended in between
/// (a host call such as `yum`, an operator's answer, or a WASI sleep), and only one tick of it
/// is counted. So waiting never counts against the CPU limit, and a spinning guest is charged
/// its real time even when the machine is loaded (ticks up to [`BUSY_GAP`] apart still count).
#[derive(Debug, Default)]
pub(super) struct CpuMeter {
    used: Duration,
    last: Option<Instant>,
}

/// The longest gap between two callbacks still counted as computing.
const BUSY_GAP: Duration = Duration::from_millis(50);

impl CpuMeter {
    /// Counts work the host did for the step (a file operation) as the step's: it is CPU and
    /// I/O the step caused, and uncounted it let a step loop on host calls far past its
    /// limit. The next tick measures from here, so the call is not counted twice.
    pub(super) fn charge(&mut self, took: Duration) {
        self.used += took;
        self.last = Some(Instant::now());
    }

    pub(super) fn tick(&mut self) -> Duration {
        let now = Instant::now();
        let gap = self.last.map_or(EPOCH_TICK, |t| now.duration_since(t));
        self.used += if gap <= BUSY_GAP { gap } else { EPOCH_TICK };
        self.last = Some(now);
        self.used
    }
}

pub(super) fn classify_trap(e: &wasmtime::Error, refused: Option<usize>, limits: &StepLimits, stderr: &BoundedPipe) -> Stop {
    if e.downcast_ref::<CpuExceeded>().is_some() {
        return Stop::CpuTime(limits.cpu);
    }
    if let Some(wanted) = refused {
        return Stop::OutOfMemory { wanted, limit: limits.memory };
    }
    // A Rust guest prints "panicked at FILE:LINE:COL:\nMESSAGE" on stderr, then aborts.
    let text = stderr.text();
    if let Some(pos) = text.rfind("panicked at ") {
        let after = &text[pos + "panicked at ".len()..];
        let (location, message) = after.split_once(":\n").unwrap_or((after, ""));
        let message = message.lines().take_while(|l| !l.starts_with("note:")).collect::<Vec<_>>().join("\n");
        return Stop::Panic(crate::ui::visible(&format!("{} (at {})", message.trim(), location.trim())).into_owned());
    }
    Stop::Trap(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Module, Store};

    /// A core module with `count` memories of `pages` 64 KiB pages each.
    fn memories(count: u32, pages: u64) -> Vec<u8> {
        let mut section = wasm_encoder::MemorySection::new();
        for _ in 0..count {
            section.memory(wasm_encoder::MemoryType { minimum: pages, maximum: None, memory64: false, shared: false, page_size_log2: None });
        }
        let mut module = wasm_encoder::Module::new();
        module.section(&section);
        module.finish()
    }

    fn instantiate(bytes: &[u8], limit: usize) -> (Result<(), String>, MemoryLimiter) {
        let engine = Engine::default();
        let module = Module::new(&engine, bytes).unwrap();
        let mut store = Store::new(&engine, MemoryLimiter::new(limit));
        store.limiter(|l| l);
        let result = wasmtime::Instance::new(&mut store, &module, &[]).map(|_| ()).map_err(|e| format!("{e:#}"));
        (result, store.into_data())
    }

    #[test]
    fn the_memory_limit_bounds_the_sum_of_every_memory() {
        // 8 memories of 250 MiB against 256 MiB: each alone would fit.
        let (result, limiter) = instantiate(&memories(8, 4000), 256 << 20);
        assert!(result.is_err(), "8 x 250 MiB instantiated under a 256 MiB limit");
        assert!(limiter.total <= 256 << 20, "{} bytes held", limiter.total);
        assert!(limiter.refused.is_some_and(|r| r > 256 << 20));
        // Four of 60 MiB fit in 256 MiB; five do not.
        assert!(instantiate(&memories(4, 960), 256 << 20).0.is_ok());
        assert!(instantiate(&memories(5, 960), 256 << 20).0.is_err());
        // The 304-byte component of the report: 16 memories of 250 MiB.
        let (result, limiter) = instantiate(&memories(16, 4000), 256 << 20);
        assert!(result.is_err() && limiter.total <= 256 << 20);
    }

    #[test]
    fn the_number_of_memories_is_bounded() {
        assert!(instantiate(&memories(MAX_MEMORIES as u32, 1), 256 << 20).0.is_ok());
        let (result, _) = instantiate(&memories(MAX_MEMORIES as u32 + 1, 1), 256 << 20);
        assert!(result.is_err_and(|e| e.contains("memor")));
    }
}
