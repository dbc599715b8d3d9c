#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| canup::fuzz::manifest(text));
