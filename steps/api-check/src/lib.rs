//! After the upgrade, Canopsis answers again.
//!
//! The procedure ends with: « Une fois que le service est rétabli, vous pouvez vous connecter à
//! nouveau sur l'interface Canopsis pour valider que tout fonctionne correctement. » The step
//! does the machine part of that check: it asks the API for the information the web interface
//! loads first (`GET /api/internal/app_info` on 3.x, `GET /api/v4/app-info` on 4.x), waits
//! while the services restart, and fails when the API does not answer in time or reports
//! another version than the target.
//!
//! Settings: `api_timeout_seconds` (300), `api_poll_ms` (2000). Without a `canopsis-api`
//! endpoint in canup.toml it checks nothing and says it skipped (`ui::skip`).

use std::time::{Duration, Instant};

use canup_sdk::{Context, Result, bail, context, http, ui};

canup_sdk::export_step!(api_check);

fn setting(name: &str, default: u64) -> u64 {
    context::setting(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn info_path(target: &semver::Version) -> &'static str {
    if target.major >= 4 { "/api/v4/app-info" } else { "/api/internal/app_info" }
}

/// The version the API reports: `version` at the top (4.x) or in any object it returns (3.x
/// merges several sections).
fn reported_version(body: &serde_json::Value) -> Option<String> {
    match body {
        serde_json::Value::Object(map) => map.get("version").and_then(|v| v.as_str()).map(str::to_owned).or_else(|| map.values().find_map(reported_version)),
        _ => None,
    }
}

fn api_check(ctx: &Context) -> Result<()> {
    let path = info_path(&ctx.target);
    let timeout = Duration::from_secs(setting("api_timeout_seconds", 300));
    let poll = Duration::from_millis(setting("api_poll_ms", 2000));
    let start = Instant::now();
    loop {
        let last = match http::Request::get("canopsis-api", path).send() {
            // Nothing was upgraded in a dry run: the API still runs the installed version. The
            // request is the real run's (a dry run lists what the real run asks), the verdict not.
            Ok(r) if ctx.dry_run => {
                ui::info(&format!(
                    "the Canopsis API answers HTTP {} on {path}; the real run waits for version {}",
                    r.status(),
                    context::version_text(&ctx.target)
                ));
                return Ok(());
            }
            Ok(r) if r.is_success() => {
                let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap_or(serde_json::Value::Null);
                let want = context::version_text(&ctx.target);
                return match reported_version(&body) {
                    // The API may print a leading "v" or a build suffix, and 23.04.1 for 23.4.1.
                    Some(v) if v.trim_start_matches('v').split(['-', '+', ' ']).next().and_then(context::parse_version).as_ref() == Some(&ctx.target) => {
                        ui::info(&format!("the Canopsis API answers on {path} with version {v}"));
                        Ok(())
                    }
                    Some(v) => bail!(
                        "the Canopsis API answers version {v} on {path}, expected {want}: the services may still run the old version; check `canoctl status` (packages) or `docker-compose ps` (Compose)"
                    ),
                    None => {
                        ui::warn(&format!("the Canopsis API answers on {path} but reports no version; it is up, its version is not checked"));
                        Ok(())
                    }
                };
            }
            Ok(r) => format!("HTTP {} {}", r.status(), r.text().chars().take(200).collect::<String>()),
            Err(e) if e.is_not_found() && e.message.contains("is not configured") => {
                ui::skip("not checking the Canopsis API: the canopsis-api endpoint is not configured in canup.toml");
                return Ok(());
            }
            Err(e) if ctx.dry_run => {
                ui::warn(&format!("the Canopsis API does not answer on {path} now ({}); the real run waits for it", e.message));
                return Ok(());
            }
            Err(e) => e.message,
        };
        if start.elapsed() >= timeout {
            bail!(
                "the Canopsis API did not answer GET {path} within {}s (last: {last}); check the services with `canoctl status` or `docker-compose ps`",
                timeout.as_secs()
            );
        }
        ui::progress(start.elapsed().as_secs(), Some(timeout.as_secs()), &format!("waiting for the Canopsis API ({last})"));
        std::thread::sleep(poll);
    }
}
