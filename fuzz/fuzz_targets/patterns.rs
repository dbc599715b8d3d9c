#![no_main]
libfuzzer_sys::fuzz_target!(|input: (Vec<String>, Vec<String>)| canup::fuzz::patterns(&input.0, &input.1));
