//! Built against the frozen `canup:step@1.0.0` in `wit/` (not the SDK, which follows the
//! current contract): a 1.0 module published before 1.1 existed must keep running.
wit_bindgen::generate!({ path: "wit", world: "step" });

use canup::step::{context, fs, ui};

struct Old;

impl Guest for Old {
    fn run() -> Result<(), String> {
        let info = context::get();
        let version = fs::read("/opt/canopsis/VERSION.txt").map_err(|e| e.message)?;
        ui::log(ui::Level::Info, &format!("a 1.0 step ({}) read {}", info.step_id, String::from_utf8_lossy(&version).trim()));
        println!("api 1.0 step ran: {}", String::from_utf8_lossy(&version).trim());
        Ok(())
    }
}

export!(Old);
