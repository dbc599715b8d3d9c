//! After the upgrade, the backlog drains.
//!
//! The procedure says: « Durant le temps de coupure des services Canopsis, RabbitMQ se sera
//! chargé de mettre en attente vos évènements. Ils seront alors « dépilés » … Nous vous
//! conseillons de surveiller l'interface d'administration de RabbitMQ juste avant, durant et
//! après la mise à jour ». The step polls the management API (`GET /api/queues/canopsis`:
//! `messages`, `messages_ready`, `messages_unacknowledged`), shows the backlog, and succeeds
//! when every queue of the vhost is empty. On timeout it fails with the queues still loaded.
//!
//! The management API's counts are statistics, not the queues themselves: for a few seconds
//! after RabbitMQ (or its app) restarts it lists the queues without the count fields, and a
//! count is up to one statistics interval old. Counting a missing field as 0 once let the step
//! declare a 50,000-message backlog drained within 70 ms. So a queue without counts is "not
//! known yet" (keep polling), and success needs two polls that find every queue empty, at
//! least one statistics interval apart (`collect_statistics_interval` of the broker).
//!
//! Settings: `drain_timeout_seconds` (900), `drain_poll_ms` (1000),
//! `drain_stats_interval_ms` (5000, RabbitMQ's default `collect_statistics_interval`: set it
//! to the broker's own). Without a `rabbitmq` endpoint in canup.toml it does not wait and
//! says it skipped (`ui::skip`): the run shows the check as skipped, not ok.

use std::time::{Duration, Instant};

use canup_sdk::{Context, Result, bail, context, http, semver::Version, ui};

canup_sdk::export_step!(drain);

fn setting(name: &str, default: u64) -> u64 {
    context::setting(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one poll saw: queues with a backlog, and queues whose counts RabbitMQ does not know yet.
#[derive(Debug, Default, PartialEq)]
pub struct Poll {
    pub loaded: Vec<(String, u64)>,
    pub unknown: Vec<String>,
}

impl Poll {
    fn empty(&self) -> bool {
        self.loaded.is_empty() && self.unknown.is_empty()
    }
}

/// Reads `GET /api/queues/VHOST` as JSON: a queue's backlog is `messages` (or
/// `messages_ready` + `messages_unacknowledged`, whichever is larger); a queue with neither is
/// unknown, never empty.
pub fn read_queues(queues: &serde_json::Value) -> Poll {
    let mut poll = Poll::default();
    for q in queues.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = q.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_owned();
        let field = |f: &str| q.get(f).and_then(|v| v.as_u64());
        let split = field("messages_ready").zip(field("messages_unacknowledged")).map(|(r, u)| r + u);
        match (field("messages"), split) {
            (None, None) => poll.unknown.push(name),
            (a, b) => {
                let n = a.unwrap_or(0).max(b.unwrap_or(0));
                if n > 0 {
                    poll.loaded.push((name, n));
                }
            }
        }
    }
    poll
}

fn poll_queues() -> Result<Option<Poll>> {
    let resp = match http::Request::get("rabbitmq", "/api/queues/canopsis?columns=name,messages,messages_ready,messages_unacknowledged").send() {
        Ok(r) => r,
        Err(e) if e.is_not_found() && e.message.contains("is not configured") => return Ok(None),
        Err(e) => bail!("{}; check that RabbitMQ is running (systemctl status rabbitmq-server)", e.message),
    };
    if !resp.is_success() {
        bail!("RabbitMQ answered HTTP {} for the queues of vhost canopsis: {}", resp.status(), resp.text());
    }
    let queues: serde_json::Value = serde_json::from_slice(resp.body()).map_err(|e| canup_sdk::Error::msg(format!("RabbitMQ queues: {e}")))?;
    Ok(Some(read_queues(&queues)))
}

/// Where to look when the engines do not consume: the tool of the install method.
fn advice(ctx: &Context) -> &'static str {
    match ctx.method.as_str() {
        "compose" if ctx.target >= Version::new(23, 10, 0) => "check the engines (docker compose ps, docker compose logs)",
        "compose" => "check the engines (docker-compose ps, docker-compose logs)",
        _ => "check the engines (canoctl status)",
    }
}

fn drain(ctx: &Context) -> Result<()> {
    let timeout = Duration::from_secs(setting("drain_timeout_seconds", 900));
    let poll_every = Duration::from_millis(setting("drain_poll_ms", 1000));
    let interval = Duration::from_millis(setting("drain_stats_interval_ms", 5000));
    let start = Instant::now();
    let mut first = None;
    let mut empty_since: Option<Instant> = None;
    loop {
        let Some(poll) = poll_queues()? else {
            ui::skip("not waiting for the RabbitMQ backlog: the rabbitmq endpoint is not configured in canup.toml");
            return Ok(());
        };
        let backlog: u64 = poll.loaded.iter().map(|(_, n)| n).sum();
        let mut wait = poll_every;
        if poll.empty() {
            match empty_since {
                Some(since) if since.elapsed() >= interval => {
                    ui::info(&format!("every queue of vhost canopsis is empty (two polls {} ms apart)", since.elapsed().as_millis()));
                    return Ok(());
                }
                // The confirming poll comes one statistics interval after the first.
                Some(since) => wait = interval.saturating_sub(since.elapsed()),
                None => {
                    empty_since = Some(Instant::now());
                    wait = interval;
                }
            }
        } else {
            empty_since = None;
            let initial = *first.get_or_insert(backlog);
            let unknown = match poll.unknown.len() {
                0 => String::new(),
                n => format!("; RabbitMQ does not know the counts of {n} queue(s) yet"),
            };
            ui::progress(initial.saturating_sub(backlog), Some(initial), &format!("{backlog} messages waiting in RabbitMQ{unknown}"));
        }
        if start.elapsed() >= timeout {
            let mut list: Vec<String> = poll.loaded.iter().map(|(q, n)| format!("{q} ({n} messages)")).collect();
            list.extend(poll.unknown.iter().map(|q| format!("{q} (count not known yet)")));
            if list.is_empty() {
                list.push("none left, but not yet confirmed by a second poll".to_owned());
            }
            bail!("the RabbitMQ queues did not drain within {} s: {}; {} and run canup apply again", timeout.as_secs(), list.join(", "), advice(ctx));
        }
        std::thread::sleep(wait.min(timeout.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_without_counts_is_unknown_never_empty() {
        let queues = serde_json::json!([
            {"name": "Engine_axe"},
            {"name": "Engine_che", "messages": 0, "messages_ready": 0, "messages_unacknowledged": 0},
            {"name": "Engine_fifo", "messages_ready": 40, "messages_unacknowledged": 2},
            {"name": "Engine_action", "messages": 7},
        ]);
        let poll = read_queues(&queues);
        assert_eq!(poll.unknown, ["Engine_axe"]);
        assert_eq!(poll.loaded, [("Engine_fifo".to_owned(), 42), ("Engine_action".to_owned(), 7)]);
        assert!(!poll.empty());
        assert!(read_queues(&serde_json::json!([{"name": "Engine_che", "messages": 0}])).empty());
    }
}
