//! The fuzz targets of `canup::fuzz` as property tests: random and structure-aware inputs,
//! no panic, and the planner's and matcher's properties. A few hundred cases each in
//! `cargo xtask test`; `cargo xtask fuzz SECONDS` runs each target for that long instead
//! (`CANUP_FUZZ_SECONDS`).

use std::time::{Duration, Instant};

use canup::fuzz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Runs `test` on values of `strategy`: 256 cases, or for `CANUP_FUZZ_SECONDS` seconds split
/// over the `parts` campaigns of one target (random and structure-aware inputs).
fn fuzz<S: Strategy>(name: &str, parts: u32, strategy: S, test: impl Fn(S::Value)) {
    let budget = std::env::var("CANUP_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).map(|s| Duration::from_secs(s) / parts);
    let start = Instant::now();
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
        let result = runner.run(&strategy, |v| {
            test(v);
            Ok(())
        });
        if let Err(e) = result {
            panic!("fuzz target {name}: {e}");
        }
        cases += 256;
        if budget.is_none_or(|b| start.elapsed() >= b) {
            break;
        }
    }
    if budget.is_some() {
        println!("fuzz target {name}: {cases} cases in {:?}, no failure", start.elapsed());
    }
}

const VALID_INDEX: &str = r#"{"format":1,"releases":[{"version":"3.40.0","published":"2020-05-04","steps":[{"api":"1.0.0","module":"release-3.40.0.wasm","sha256":"ab","length":3,"manifest":{"id":"3.40.0/x","phase":"post-update","methods":["packages"],"editions":["core"],"capabilities":{"exec":[{"program":"/usr/bin/canoctl","args":["restart"]}]}}}],"data":[{"name":"compose/.env","target":"data-1","sha256":"cd","length":1}]}]}"#;

/// Bytes of a valid index with some of them replaced: deep inside the format, where random
/// bytes never get.
fn mutated(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..valid.len(), any::<u8>()), 0..8).prop_map(move |edits| {
        let mut bytes = valid.as_bytes().to_vec();
        for (at, b) in edits {
            bytes[at] = b;
        }
        bytes
    })
}

#[test]
fn index_parser() {
    fuzz("index (random bytes)", 2, prop::collection::vec(any::<u8>(), 0..512), |b| fuzz::index(&b));
    fuzz("index (mutated)", 2, mutated(VALID_INDEX), |b| fuzz::index(&b));
}

const VALID_MANIFEST: &str = "release = \"3.40.0\"\napi = \"1.0.0\"\n[[step]]\nid = \"3.40.0/x\"\nphase = \"post-update\"\nmethods = [\"packages\"]\neditions = [\"core\"]\n[step.capabilities.fs]\nread = [\"/opt/canopsis/etc/*.conf\"]\nwrite = [\"/opt/canopsis/etc/webserver.conf\"]\n[[step.capabilities.exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"--enablerepo=canopsis[*]\", \"**\"]\n[[step.capabilities.http]]\nendpoint = \"rabbitmq\"\nmethods = [\"GET\"]\npaths = [\"/api/queues/*\"]\n";

#[test]
fn manifest_parser() {
    fuzz("manifest (random text)", 2, ".{0,300}", |t: String| fuzz::manifest(&t));
    fuzz("manifest (mutated)", 2, mutated(VALID_MANIFEST), |b| fuzz::manifest(&String::from_utf8_lossy(&b)));
}

#[test]
fn config_and_policy_parser() {
    let valid = canup_tests::OPERATOR_POLICY;
    fuzz("config (random text)", 2, ".{0,300}", |t: String| fuzz::config(&t));
    let bytes: &'static str = Box::leak(valid.to_owned().into_boxed_str());
    fuzz("config (mutated policy)", 2, mutated(bytes), |b| fuzz::config(&String::from_utf8_lossy(&b)));
}

#[test]
fn version_and_path_planner() {
    let version = || (2u64..5, 0u64..6, 0u64..4);
    fuzz(
        "planner",
        1,
        (prop::collection::vec((2u64..5, 0u64..6, 0u64..4, 0u8..4), 0..24), version(), prop::option::of(version())),
        |(versions, installed, target)| fuzz::planner(&versions, installed, target),
    );
}

#[test]
fn argument_pattern_matcher() {
    let word = prop_oneof!["[a-z*?/.=-]{0,6}", Just("**".to_owned()), Just("[*]".to_owned()), Just("{a,b}".to_owned()), "[\\[\\]{}!*?\\\\a-c]{0,4}"];
    fuzz("patterns", 1, (prop::collection::vec(word.clone(), 0..5), prop::collection::vec(word, 0..6)), |(patterns, args)| fuzz::patterns(&patterns, &args));
}
