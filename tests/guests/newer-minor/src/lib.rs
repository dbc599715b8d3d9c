//! Built against `canup:step@1.3.0`, which this canup does not know: the component model's
//! semver matching would link it (it uses nothing new), so canup must refuse it itself.
wit_bindgen::generate!({ path: "wit", world: "step" });

struct Newer;

impl Guest for Newer {
    fn run() -> Result<(), String> {
        let info = canup::step::context::get();
        Err(format!("a 1.3 step ran as {}: canup should have refused it", info.step_id))
    }
}

export!(Newer);
