//! Files, by absolute path, within the step's declared read and write lists. Writes are
//! atomic and canup keeps a backup of the previous content.

use crate::bindings::canup::step::fs as wit;
pub use crate::bindings::canup::step::fs::{FileInfo, FileKind};
use crate::{Error, Result};

fn ctx<T>(r: std::result::Result<T, crate::bindings::canup::step::types::Error>, what: &str, path: &str) -> Result<T> {
    r.map_err(|e| Error::from(e).context(format!("{what} {path}")))
}

pub fn read(path: &str) -> Result<Vec<u8>> {
    ctx(wit::read(path), "reading", path)
}

pub fn read_to_string(path: &str) -> Result<String> {
    String::from_utf8(read(path)?).map_err(|_| Error::msg(format!("{path} is not UTF-8 text")))
}

pub fn write(path: &str, data: impl AsRef<[u8]>) -> Result<()> {
    ctx(wit::write(path, data.as_ref()), "writing", path)
}

pub fn append(path: &str, data: impl AsRef<[u8]>) -> Result<()> {
    ctx(wit::append(path, data.as_ref()), "appending to", path)
}

pub fn exists(path: &str) -> Result<bool> {
    ctx(wit::exists(path), "checking", path)
}

pub fn list_dir(path: &str) -> Result<Vec<String>> {
    ctx(wit::list_dir(path), "listing", path)
}

pub fn remove(path: &str) -> Result<()> {
    ctx(wit::remove(path), "removing", path)
}

pub fn metadata(path: &str) -> Result<FileInfo> {
    ctx(wit::metadata(path), "inspecting", path)
}

/// Creates a directory and its missing parents (`mkdir -p`) within the step's write rules;
/// a new one gets `mode` (0755 when `None`) and its parent's owner. `canup restore-files`
/// removes what a run created. Needs a 1.1 canup.
pub fn create_dir(path: &str, mode: Option<u32>) -> Result<()> {
    ctx(wit::create_dir(path, mode), "creating directory", path)
}
