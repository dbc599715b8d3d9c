//! After the upgrade, the backlog drains.
//!
//! The procedure says: « Durant le temps de coupure des services Canopsis, RabbitMQ se sera
//! chargé de mettre en attente vos évènements. Ils seront alors « dépilés » … Nous vous
//! conseillons de surveiller l'interface d'administration de RabbitMQ juste avant, durant et
//! après la mise à jour ». The step polls the management API (`GET /api/queues/canopsis`:
//! `messages`, `messages_ready`, `messages_unacknowledged`), shows the backlog, and succeeds
//! when every queue of the vhost is empty. On timeout it fails with the queues still loaded.
//!
//! Settings: `drain_timeout_seconds` (900), `drain_poll_ms` (1000). Without a `rabbitmq`
//! endpoint in canup.toml it warns and does not wait.

use std::time::{Duration, Instant};

use canup_sdk::{Context, Result, bail, context, http, ui};

canup_sdk::export_step!(drain);

fn setting(name: &str, default: u64) -> u64 {
    context::setting(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (queue, messages) of every queue with a backlog.
fn loaded() -> Result<Option<Vec<(String, u64)>>> {
    let resp = match http::Request::get("rabbitmq", "/api/queues/canopsis?columns=name,messages,messages_ready,messages_unacknowledged").send() {
        Ok(r) => r,
        Err(e) if e.is_not_found() && e.message.contains("is not configured") => return Ok(None),
        Err(e) => bail!("{}; check that RabbitMQ is running (systemctl status rabbitmq-server)", e.message),
    };
    if !resp.is_success() {
        bail!("RabbitMQ answered HTTP {} for the queues of vhost canopsis: {}", resp.status(), resp.text());
    }
    let queues: serde_json::Value = serde_json::from_slice(resp.body()).map_err(|e| canup_sdk::Error::msg(format!("RabbitMQ queues: {e}")))?;
    let field = |q: &serde_json::Value, f: &str| q.get(f).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(Some(
        queues
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|q| {
                let n = field(q, "messages").max(field(q, "messages_ready") + field(q, "messages_unacknowledged"));
                (q.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_owned(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect(),
    ))
}

fn drain(_: &Context) -> Result<()> {
    let timeout = Duration::from_secs(setting("drain_timeout_seconds", 900));
    let poll = Duration::from_millis(setting("drain_poll_ms", 1000));
    let start = Instant::now();
    let mut first = None;
    loop {
        let Some(queues) = loaded()? else {
            ui::warn("not waiting for the RabbitMQ backlog: the rabbitmq endpoint is not configured in canup.toml");
            return Ok(());
        };
        let backlog: u64 = queues.iter().map(|(_, n)| n).sum();
        let initial = *first.get_or_insert(backlog);
        if backlog == 0 {
            ui::info("every queue of vhost canopsis is empty");
            return Ok(());
        }
        ui::progress(initial.saturating_sub(backlog), Some(initial), &format!("{backlog} messages waiting in RabbitMQ"));
        if start.elapsed() >= timeout {
            let list: Vec<String> = queues.iter().map(|(q, n)| format!("{q} ({n} messages)")).collect();
            bail!(
                "the RabbitMQ queues did not drain within {} s: {}; check the engines (canoctl status) and run canup apply again",
                timeout.as_secs(),
                list.join(", ")
            );
        }
        std::thread::sleep(poll);
    }
}
