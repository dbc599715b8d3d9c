//! After the upgrade, the backlog drains.
//!
//! The procedure says: « Durant le temps de coupure des services Canopsis, RabbitMQ se sera
//! chargé de mettre en attente vos évènements. Ils seront alors « dépilés » … Nous vous
//! conseillons de surveiller l'interface d'administration de RabbitMQ juste avant, durant et
//! après la mise à jour ». The step polls the management API (`GET /api/queues/canopsis`:
//! `messages`, `messages_ready`, `messages_unacknowledged`), shows the backlog, and succeeds
//! when every queue of the vhost is empty. On timeout it fails with the queues still loaded.
//!
//! The management API's counts are statistics, not the queues themselves. Each queue process
//! emits its figures once per statistics interval (`collect_statistics_interval`) while it
//! works, and the management plugin collects them once per interval: a change shows up to two
//! intervals late (measured on Debian's RabbitMQ 3.10.8 with a 5 s interval: 5 s; an outside
//! tester saw 8–9 s). Two polls one interval apart could both read a stale zero while messages
//! that arrived just as the queues emptied were waiting: a false "empty". And for a few
//! seconds after RabbitMQ (or its app) restarts it lists queues without any count: that is
//! "not known yet" (keep polling), never 0 (which once declared 50,000 messages drained).
//!
//! So "empty" needs evidence newer than any change it could hide. From the first poll where
//! every queue reads empty, each queue must read empty again with either
//! - figures from a later emission of its own process: its `reductions` (the queue process's
//!   work counter, part of the same emission as `messages`, unchanged while the queue is idle)
//!   moved, and the emission still shows no backlog; or
//! - two statistics intervals and a second gone by with those figures unchanged: the queue
//!   was idle that long, and a message that arrived would have shown by now.
//!
//! The cumulative `message_stats` counters (`publish`, `deliver_get`) are not such evidence:
//! the channels emit them on timers of their own, so a poll can show a publish before the
//! queue's `messages` that counts it.
//!
//! The window rests on `drain_stats_interval_ms`, which must be the broker's
//! `collect_statistics_interval` (rabbitmq.conf): the management API does not expose it (no
//! field in `/api/overview` or `/api/nodes` on Debian's 3.10.8), and timing the nodes' own
//! figures does not tell it either (they refresh about every 5 s whatever the setting: a 100 ms
//! broker measured 5060 ms). A setting below the broker's interval shortens the window of an
//! idle queue: a refill that reaches the statistics later than two of those shorter intervals
//! and a second after the first empty reading is missed. A setting above it only waits longer.
//! The progress total is the first backlog read with every queue's count known (a restarted
//! broker's first polls have none), raised if the backlog grows.
//!
//! Settings: `drain_timeout_seconds` (900), `drain_poll_ms` (1000),
//! `drain_stats_interval_ms` (5000, RabbitMQ's default `collect_statistics_interval`: set it
//! to the broker's own). Without a `rabbitmq` endpoint in canup.toml it does not wait and
//! says it skipped (`ui::skip`): the run shows the check as skipped, not ok.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use canup_sdk::{Context, Result, bail, context, http, semver::Version, ui};

canup_sdk::export_step!(drain);

fn setting(name: &str, default: u64) -> u64 {
    context::setting(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one poll saw: queues with a backlog, queues whose counts RabbitMQ does not know yet,
/// and what tells one statistics emission of each queue from the next.
#[derive(Debug, Default, PartialEq)]
pub struct Poll {
    pub loaded: Vec<(String, u64)>,
    pub unknown: Vec<String>,
    /// Each queue's `reductions` at its latest statistics emission (`None` when not listed).
    pub emissions: BTreeMap<String, Option<u64>>,
}

impl Poll {
    fn empty(&self) -> bool {
        self.loaded.is_empty() && self.unknown.is_empty()
    }
}

/// The columns a poll asks for: the counts, and the queue process's `reductions`.
const QUEUE_COLUMNS: &str = "name,messages,messages_ready,messages_unacknowledged,reductions";

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
            (None, None) => poll.unknown.push(name.clone()),
            (a, b) => {
                let n = a.unwrap_or(0).max(b.unwrap_or(0));
                if n > 0 {
                    poll.loaded.push((name.clone(), n));
                }
            }
        }
        poll.emissions.insert(name, field("reductions"));
    }
    poll
}

/// Whether every queue read empty again on evidence newer than the poll `since` that first
/// found them all empty: a later emission of the queue's own figures, or `window` elapsed.
/// A queue that appeared since has no earlier reading to compare with: it waits the window.
pub fn confirmed(start: &BTreeMap<String, Option<u64>>, now: &Poll, elapsed: Duration, window: Duration) -> bool {
    now.empty()
        && now.emissions.iter().all(|(queue, emission)| {
            let newer = matches!((start.get(queue), emission), (Some(Some(a)), Some(b)) if a != b);
            newer || elapsed >= window
        })
}

fn poll_queues() -> Result<Option<Poll>> {
    let resp = match http::Request::get("rabbitmq", &format!("/api/queues/canopsis?columns={QUEUE_COLUMNS}")).send() {
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

/// The progress bar's total after `poll`: the first backlog read with every queue's count
/// known (a restarted broker lists its queues without counts for a while: a total taken then
/// showed `0/0`), raised when the backlog grows.
pub fn progress_total(total: Option<u64>, poll: &Poll) -> Option<u64> {
    let backlog: u64 = poll.loaded.iter().map(|(_, n)| n).sum();
    match total {
        Some(t) => Some(t.max(backlog)),
        None if poll.unknown.is_empty() => Some(backlog),
        None => None,
    }
}

/// Where to look when the engines do not consume: the tool of the install method.
fn advice(ctx: &Context) -> &'static str {
    match ctx.method.as_str() {
        "compose" if ctx.target >= Version::new(23, 10, 0) => "check the engines (docker compose ps, docker compose logs)",
        "compose" => "check the engines (docker-compose ps, docker-compose logs)",
        _ => "check the engines (canoctl status)",
    }
}

/// How long figures must stay unchanged to count as evidence on their own: a change shows
/// up to two statistics intervals late, and a second of margin for the polls themselves.
pub fn window(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms.saturating_mul(2).saturating_add(1000))
}

fn drain(ctx: &Context) -> Result<()> {
    let timeout = Duration::from_secs(setting("drain_timeout_seconds", 900));
    let poll_every = Duration::from_millis(setting("drain_poll_ms", 1000));
    let window = window(setting("drain_stats_interval_ms", 5000));
    let start = Instant::now();
    let mut total: Option<u64> = None;
    let mut empty_since: Option<(Instant, BTreeMap<String, Option<u64>>)> = None;
    loop {
        let Some(poll) = poll_queues()? else {
            ui::skip("not waiting for the RabbitMQ backlog: the rabbitmq endpoint is not configured in canup.toml");
            return Ok(());
        };
        let now = Instant::now();
        let backlog: u64 = poll.loaded.iter().map(|(_, n)| n).sum();
        if poll.empty() {
            match &empty_since {
                Some((since, at_start)) if confirmed(at_start, &poll, since.elapsed(), window) => {
                    ui::info(&format!(
                        "every queue of vhost canopsis is empty: confirmed {} ms after the first empty reading, on figures newer than it or unchanged for {} ms",
                        since.elapsed().as_millis(),
                        window.as_millis()
                    ));
                    return Ok(());
                }
                Some(_) => {}
                None => empty_since = Some((now, poll.emissions.clone())),
            }
        } else {
            empty_since = None;
            // The first backlog with every count known; a backlog that grows raises it.
            total = progress_total(total, &poll);
            let unknown = match poll.unknown.len() {
                0 => String::new(),
                n => format!("; RabbitMQ does not know the counts of {n} queue(s) yet"),
            };
            let done = total.map_or(0, |t| t.saturating_sub(backlog));
            ui::progress(done, total, &format!("{backlog} messages waiting in RabbitMQ{unknown}"));
        }
        if start.elapsed() >= timeout {
            let mut list: Vec<String> = poll.loaded.iter().map(|(q, n)| format!("{q} ({n} messages)")).collect();
            list.extend(poll.unknown.iter().map(|q| format!("{q} (count not known yet)")));
            if list.is_empty() {
                list.push(format!("none left, but not yet confirmed by figures newer than the first empty reading (waiting up to {} ms)", window.as_millis()));
            }
            bail!("the RabbitMQ queues did not drain within {} s: {}; {} and run canup apply again", timeout.as_secs(), list.join(", "), advice(ctx));
        }
        // Once the queues read empty, the next poll comes no later than the end of the window:
        // polling on the slower `drain_poll_ms` beat would only make the check wait longer than
        // its evidence needs.
        let until_window = empty_since.as_ref().map_or(poll_every, |(since, _)| window.saturating_sub(since.elapsed()));
        std::thread::sleep(poll_every.min(until_window).min(timeout.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
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

    fn emissions(list: &[(&str, Option<u64>)]) -> BTreeMap<String, Option<u64>> {
        list.iter().map(|(q, r)| (q.to_string(), *r)).collect()
    }

    #[test]
    fn empty_is_confirmed_by_a_newer_emission_or_by_the_whole_window_never_by_a_stale_reading() {
        let window = Duration::from_secs(11);
        let start = emissions(&[("Engine_axe", Some(100)), ("Engine_che", Some(7))]);
        let stale =
            read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 0, "reductions": 100}, {"name": "Engine_che", "messages": 0, "reductions": 7}]));
        // The tester's confirming poll 5 s later, on the very figures of the first: not evidence.
        assert!(!confirmed(&start, &stale, Duration::from_secs(5), window));
        assert!(confirmed(&start, &stale, window, window), "idle for two intervals and a second");
        // Engine_axe emitted again (still empty), Engine_che did not: Engine_che waits the window.
        let one_newer =
            read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 0, "reductions": 180}, {"name": "Engine_che", "messages": 0, "reductions": 7}]));
        assert!(!confirmed(&start, &one_newer, Duration::from_secs(5), window));
        let both_newer =
            read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 0, "reductions": 180}, {"name": "Engine_che", "messages": 0, "reductions": 9}]));
        assert!(confirmed(&start, &both_newer, Duration::from_secs(1), window));
        // A newer emission that shows the refill is no confirmation at any time.
        let refilled =
            read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 5, "reductions": 180}, {"name": "Engine_che", "messages": 0, "reductions": 9}]));
        assert!(!confirmed(&start, &refilled, Duration::from_secs(60), window));
        // Without reductions (an older broker), only the window counts.
        let bare = read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 0}, {"name": "Engine_che", "messages": 0}]));
        assert!(!confirmed(&emissions(&[("Engine_axe", None), ("Engine_che", None)]), &bare, Duration::from_secs(10), window));
    }

    #[test]
    fn the_progress_total_waits_for_every_count_and_grows_with_the_backlog() {
        let restarted = read_queues(&serde_json::json!([{"name": "Engine_axe"}, {"name": "Engine_che", "messages": 3}]));
        assert_eq!(progress_total(None, &restarted), None, "no total while a count is unknown");
        let known = read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 200}, {"name": "Engine_che", "messages": 3}]));
        assert_eq!(progress_total(None, &known), Some(203));
        let less = read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 50}]));
        assert_eq!(progress_total(Some(203), &less), Some(203));
        let more = read_queues(&serde_json::json!([{"name": "Engine_axe", "messages": 250}]));
        assert_eq!(progress_total(Some(203), &more), Some(250));
    }
}
