//! The compiled-component cache. A compiled component is native code that wasmtime loads
//! without validation, so the cache is treated like a binary directory: it must be owned by
//! canup's user and writable by nobody else, and each file is checked the same way before it
//! is loaded. Keys combine the module's sha256 with wasmtime's compatibility hash, so a changed
//! module or a different wasmtime/engine configuration never loads stale code.

use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("compiled-component cache {path}: {why}")]
    Unsafe { path: String, why: String },
    #[error("compiled-component cache {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into sha256 so the key is stable across processes (unlike the std
/// hasher's, which is only promised to be stable within one build).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Refuses a cache path that someone other than us could have written.
fn check_owned(path: &Path, meta: &fs::Metadata) -> Result<(), CacheError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(CacheError::Unsafe { path: path.display().to_string(), why: format!("owned by uid {}, not {euid}", meta.uid()) });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(CacheError::Unsafe { path: path.display().to_string(), why: format!("writable by group or others (mode {:o})", meta.mode() & 0o777) });
    }
    Ok(())
}

impl CompiledCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io { path: dir.display().to_string(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        check_owned(dir, &fs::metadata(dir).map_err(io)?)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Ok(Self { dir: dir.to_owned(), engine_key })
    }

    fn path(&self, module_sha256: &str) -> PathBuf {
        self.dir.join(format!("{module_sha256}-{}.cwasm", self.engine_key))
    }

    /// A previously compiled component, or `None` (also when the entry is unusable: the
    /// caller then compiles and overwrites it).
    pub fn load(&self, engine: &Engine, module_sha256: &str) -> Result<Option<Component>, CacheError> {
        let path = self.path(module_sha256);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path: path.display().to_string(), source }),
        };
        if !meta.is_file() {
            return Err(CacheError::Unsafe { path: path.display().to_string(), why: "not a regular file".into() });
        }
        check_owned(&self.dir, &fs::metadata(&self.dir).map_err(|source| CacheError::Io { path: self.dir.display().to_string(), source })?)?;
        check_owned(&path, &meta)?;
        // Read into memory rather than mapped: a file truncated under a mapping would crash
        // canup with SIGBUS.
        let bytes = fs::read(&path).map_err(|source| CacheError::Io { path: path.display().to_string(), source })?;
        // SAFETY: the file was written by `store` below from a component this engine compiled,
        // in a directory only canup's user can write (checked just above), under a key that
        // includes the engine's compatibility hash.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!("ignoring unusable compiled component {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    pub fn store(&self, module_sha256: &str, component: &Component) -> Result<(), CacheError> {
        let path = self.path(module_sha256);
        let io = |source| CacheError::Io { path: path.display().to_string(), source };
        let bytes = component.serialize().map_err(|e| io(std::io::Error::other(e.to_string())))?;
        crate::durable::atomic_replace(&path, &bytes).map_err(io)
    }
}
