//! Built against `canup:step@2.0.0`; canup must refuse it before instantiation.
wit_bindgen::generate!({ path: "wit", world: "step" });

struct Newer;

impl Guest for Newer {
    fn run() -> Result<(), String> {
        let info = canup::step::context::get();
        Err(format!("a 2.0 step ran as {}: canup should have refused it", info.step_id))
    }
}

export!(Newer);
