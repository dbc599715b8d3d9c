//! Fetching repository files with retries that survive a connection dropped mid-download.
//!
//! tough's HTTP transport retries failed requests and 5xx answers, but a body cut halfway by a
//! server without `Range` support ends the fetch. This wrapper re-fetches the file and skips
//! the bytes already handed on, so the consumer (tough, which checks length and hash over
//! the whole stream) sees one uninterrupted stream. Sizes stay bounded by tough's limits,
//! which apply to the stream this returns.

use std::time::Duration;

use futures_util::StreamExt;
use tough::{DefaultTransport, HttpTransportBuilder, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

#[derive(Debug, Clone)]
pub struct ResumingTransport {
    inner: DefaultTransport,
    /// Re-fetches allowed after a failure in the middle of a body.
    resumes: u32,
    backoff: Duration,
}

impl ResumingTransport {
    pub fn new(timeout: Duration, tries: u32) -> Self {
        let http = HttpTransportBuilder::new()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .tries(tries)
            .initial_backoff(Duration::from_millis(50))
            .max_backoff(Duration::from_secs(2));
        Self { inner: DefaultTransport::new_with_http_settings(http), resumes: tries, backoff: Duration::from_millis(50) }
    }
}

struct State {
    inner: DefaultTransport,
    url: Url,
    stream: TransportStream,
    /// Bytes already handed on.
    delivered: u64,
    /// Bytes of the current stream still to drop (already delivered by an earlier attempt).
    skip: u64,
    resumes_left: u32,
    backoff: Duration,
    done: bool,
}

#[tough::async_trait]
impl Transport for ResumingTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let stream = self.inner.fetch(url.clone()).await?;
        let state = State {
            inner: self.inner.clone(),
            url,
            stream,
            delivered: 0,
            skip: 0,
            resumes_left: self.resumes,
            backoff: self.backoff,
            done: false,
        };
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
                    Some(Err(e)) if st.resumes_left > 0 && e.kind() != TransportErrorKind::FileNotFound => {
                        st.resumes_left -= 1;
                        tracing::warn!("download of {} broke after {} bytes ({e}); fetching it again", st.url, st.delivered);
                        tokio::time::sleep(st.backoff).await;
                        st.backoff *= 2;
                        // Spawned because the stream must be `Sync` and the fetch future is not.
                        let (inner, url) = (st.inner.clone(), st.url.clone());
                        let refetch = tokio::spawn(async move { inner.fetch(url).await }).await;
                        match refetch {
                            Ok(Ok(s)) => {
                                st.stream = s;
                                st.skip = st.delivered;
                            }
                            Ok(Err(e)) => {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                            Err(join) => {
                                st.done = true;
                                let e = TransportError::new_with_cause(TransportErrorKind::Other, st.url.as_str(), join);
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
