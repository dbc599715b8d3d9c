//! Signing key files.
//!
//! New keys are ed25519 in PKCS#8 v1, PEM ("-----BEGIN PRIVATE KEY-----"): the form
//! `openssl genpkey -algorithm ED25519` writes, and the one OpenSSL 3, pyca/cryptography and
//! python-tuf read, so a vendor can inspect, back up or use a key with the usual tools. Keys
//! written by earlier canup versions (PKCS#8 v2, DER) are still read. tough's own
//! `LocalKeySource` reads DER only (its PEM branch is RSA-only), hence this key source.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::KeySource;
use tough::sign::Sign;

use super::{PublishError, io, tuf};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A private key file, PEM or DER.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub path: PathBuf,
}

impl KeyFile {
    fn der(&self) -> Result<Vec<u8>, BoxError> {
        let bytes = fs::read(&self.path).map_err(|e| format!("reading key {}: {e}", self.path.display()))?;
        if !bytes.starts_with(b"-----BEGIN") {
            return Ok(bytes);
        }
        let pem = pem::parse(&bytes).map_err(|e| format!("key {}: {e}", self.path.display()))?;
        if pem.tag() != "PRIVATE KEY" {
            return Err(format!("key {}: a PEM \"{}\" block, expected an unencrypted PKCS#8 \"PRIVATE KEY\"", self.path.display(), pem.tag()).into());
        }
        Ok(pem.into_contents())
    }
}

#[tough::async_trait]
impl KeySource for KeyFile {
    async fn as_sign(&self) -> Result<Box<dyn Sign>, BoxError> {
        let der = self.der()?;
        let pair = tough::sign::parse_keypair(&der).map_err(|e| format!("key {}: {e}", self.path.display()))?;
        Ok(Box::new(pair))
    }

    async fn write(&self, _value: &str, _key_id_hex: &str) -> Result<(), BoxError> {
        Err(format!("canup never rewrites key {}", self.path.display()).into())
    }
}

pub fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths.iter().map(|p| Box::new(KeyFile { path: p.clone() }) as Box<dyn KeySource>).collect()
}

/// Generates an ed25519 signing key (PKCS#8 v1 PEM, mode 0600) and returns its TUF key id.
pub async fn keygen(out: &Path) -> Result<String, PublishError> {
    let shown = out.display().to_string();
    let pair = Ed25519KeyPair::generate().map_err(|e| tuf("generating a key")(&e))?;
    let der = pair.to_pkcs8v1().map_err(|e| tuf("encoding the key")(&e))?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io(format!("creating key file {shown} (an existing key is never overwritten)")))?;
    f.write_all(text.as_bytes()).map_err(io(format!("writing {shown}")))?;
    f.sync_all().map_err(io(format!("writing {shown}")))?;
    key_id(out).await
}

/// The signer of a key file.
pub async fn signer(path: &Path) -> Result<Box<dyn Sign>, PublishError> {
    KeyFile { path: path.to_owned() }.as_sign().await.map_err(|e| PublishError::Tuf { what: format!("key {}", path.display()), why: e.to_string() })
}

/// The TUF key id of a key file.
pub async fn key_id(path: &Path) -> Result<String, PublishError> {
    let sign = signer(path).await?;
    let id = sign.tuf_key().key_id().map_err(|e| tuf(&format!("key {}", path.display()))(&e))?;
    Ok(hex::encode(id))
}
