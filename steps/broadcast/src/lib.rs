//! The broadcast message around the upgrade's service interruption.
//!
//! The procedure says: « Cette mise à jour causera une interruption de service … Vous pouvez
//! notamment utiliser la fonctionnalité de diffusion de messages afin de prévenir vos
//! utilisateurs en amont. » Broadcast messages exist from Canopsis 3.40.0 (« Diffusion de
//! messages d'annonces »): `POST /api/v2/broadcast-message` on 3.40–3.x,
//! `/api/v4/broadcast-message` on 4.x, with message, color, start and end. Below 3.40.0 the
//! step logs why it does nothing. The message is removed once the upgrade is verified.
//!
//! Settings: `broadcast_message` (text), `broadcast_minutes` (how long it shows, 60).
//! Without an `canopsis-api` endpoint in canup.toml the announcement is skipped (`ui::skip`):
//! it informs users, it does not protect the upgrade.

use canup_sdk::{Context, Result, bail, context, http, ui};
use semver::Version;

canup_sdk::export_step! {
    "broadcast/announce" => announce,
    "broadcast/withdraw" => withdraw,
}

fn api_base(version: &Version) -> Option<&'static str> {
    if *version < Version::new(3, 40, 0) {
        None
    } else if version.major == 3 {
        Some("/api/v2/broadcast-message")
    } else {
        Some("/api/v4/broadcast-message")
    }
}

fn message(ctx: &Context) -> String {
    context::setting("broadcast_message")
        .unwrap_or_else(|| format!("Canopsis is being upgraded to {}: the service will be interrupted for a few minutes.", ctx.target))
}

/// The endpoint may be absent from the operator's config: say so and go on.
fn unconfigured(e: &canup_sdk::Error) -> bool {
    e.is_not_found() && e.message.contains("is not configured")
}

fn announce(ctx: &Context) -> Result<()> {
    let Some(base) = api_base(&ctx.installed) else {
        ui::info(&format!("no broadcast message: Canopsis {} has none (3.40.0 and later)", ctx.installed));
        return Ok(());
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let minutes: u64 = context::setting("broadcast_minutes").and_then(|m| m.parse().ok()).unwrap_or(60);
    let body = serde_json::json!({ "message": message(ctx), "color": "#e75e40", "start": now, "end": now + minutes * 60 });
    match http::Request::post("canopsis-api", base).json(body.to_string()).send() {
        Ok(r) if r.is_success() => ui::info("users are told of the interruption (broadcast message)"),
        Ok(r) => bail!("the Canopsis API refused the broadcast message: HTTP {} {}", r.status(), r.text()),
        Err(e) if unconfigured(&e) => ui::skip("no broadcast message: the canopsis-api endpoint is not configured in canup.toml"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn withdraw(ctx: &Context) -> Result<()> {
    let Some(base) = api_base(&ctx.target) else { return Ok(()) };
    let list = match http::Request::get("canopsis-api", base).send() {
        Ok(r) if r.is_success() => r,
        Ok(r) => bail!("listing broadcast messages: HTTP {}", r.status()),
        Err(e) if unconfigured(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let value: serde_json::Value = serde_json::from_slice(list.body()).map_err(|e| canup_sdk::Error::msg(format!("broadcast messages: {e}")))?;
    // 4.x pages its lists under "data"; 3.x answers a plain array.
    let items = value.get("data").unwrap_or(&value).as_array().cloned().unwrap_or_default();
    let ours = message(ctx);
    for item in items.iter().filter(|i| i.get("message").and_then(|m| m.as_str()) == Some(ours.as_str())) {
        if let Some(id) = item.get("_id").and_then(|i| i.as_str()) {
            http::Request::delete("canopsis-api", &format!("{base}/{id}")).send()?;
            ui::info("removed the upgrade's broadcast message");
        }
    }
    Ok(())
}
