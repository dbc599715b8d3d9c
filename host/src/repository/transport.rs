//! Fetching repository files: one HTTP client for the whole load, retries on connection
//! errors and 5xx, and resumption when a connection drops mid-download.
//!
//! tough's own HTTP transport builds a new client (and TLS verifier) for every file, which
//! cost ~50 ms per file here, and ends a fetch whose body was cut by a server without
//! `Range` support. This transport re-fetches such a file and skips the bytes already handed
//! on, so the consumer (tough, which checks length and hash over the whole stream) sees one
//! uninterrupted stream. Sizes stay bounded by tough's limits, which apply to the stream this
//! returns. `file://` URLs go to tough's filesystem transport.

use std::time::Duration;

use futures_util::StreamExt;
use tough::{FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

const MAX_REDIRECTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct ResumingTransport {
    client: &'static reqwest::Client,
    timeout: Duration,
    tries: u32,
    backoff: Duration,
}

impl ResumingTransport {
    pub fn new(timeout: Duration, tries: u32) -> Result<Self, String> {
        let client = crate::capabilities::http::shared_client()?;
        Ok(Self { client, timeout, tries: tries.max(1), backoff: Duration::from_millis(50) })
    }

    /// One GET with retries: connection errors, timeouts and 5xx are retried with backoff;
    /// 403/404/410 mean "not there" (which ends tough's walk of root versions).
    async fn open(&self, url: &Url) -> Result<TransportStream, TransportError> {
        let mut backoff = self.backoff;
        let mut last = None;
        let mut url = url.clone();
        let mut redirects = 0;
        let mut attempt = 0;
        while attempt < self.tries {
            attempt += 1;
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            match self.client.get(url.clone()).timeout(self.timeout).send().await {
                // The shared client follows no redirect itself; a repository may sit behind
                // one (a mirror, a CDN). What it serves is verified by TUF wherever it comes from.
                Ok(resp) if resp.status().is_redirection() && redirects < MAX_REDIRECTS => {
                    let Some(Ok(next)) = crate::capabilities::http::redirect_target(&resp) else {
                        return Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            url.as_str(),
                            format!("HTTP {} without a usable Location", resp.status()),
                        ));
                    };
                    redirects += 1;
                    attempt -= 1;
                    url = next;
                }
                Ok(resp) if resp.status().is_success() => {
                    let stream = resp.bytes_stream().map(|chunk| chunk.map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, "body", e)));
                    return Ok(Box::pin(stream));
                }
                Ok(resp) if matches!(resp.status().as_u16(), 403 | 404 | 410) => {
                    return Err(TransportError::new(TransportErrorKind::FileNotFound, url.as_str()));
                }
                Ok(resp) if resp.status().is_server_error() => {
                    tracing::warn!("{url} answered {}; retrying", resp.status());
                    last = Some(TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), format!("HTTP {}", resp.status())));
                }
                Ok(resp) => {
                    return Err(TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), format!("HTTP {}", resp.status())));
                }
                Err(e) => {
                    tracing::warn!("fetching {url}: {e}; retrying");
                    last = Some(TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e));
                }
            }
        }
        Err(last.unwrap_or_else(|| TransportError::new(TransportErrorKind::Other, url.as_str())))
    }
}

struct State {
    transport: ResumingTransport,
    url: Url,
    stream: TransportStream,
    /// Bytes already handed on.
    delivered: u64,
    /// Bytes of the current stream still to drop (already delivered by an earlier attempt).
    skip: u64,
    resumes_left: u32,
    done: bool,
}

#[tough::async_trait]
impl Transport for ResumingTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() == "file" {
            return FilesystemTransport.fetch(url).await;
        }
        let stream = self.open(&url).await?;
        let state = State { transport: self.clone(), url, stream, delivered: 0, skip: 0, resumes_left: self.tries, done: false };
        let resumed = futures_util::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                match st.stream.next().await {
                    None => return None,
                    Some(Ok(mut chunk)) => {
                        let drop = st.skip.min(chunk.len() as u64) as usize;
                        st.skip -= drop as u64;
                        let chunk = chunk.split_off(drop);
                        if chunk.is_empty() {
                            continue;
                        }
                        st.delivered += chunk.len() as u64;
                        return Some((Ok(chunk), st));
                    }
                    Some(Err(e)) if st.resumes_left > 0 => {
                        st.resumes_left -= 1;
                        tracing::warn!("download of {} broke after {} bytes ({e}); fetching it again", st.url, st.delivered);
                        match st.transport.open(&st.url).await {
                            Ok(s) => {
                                st.stream = s;
                                st.skip = st.delivered;
                            }
                            Err(e) => {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        });
        Ok(Box::pin(resumed))
    }
}
