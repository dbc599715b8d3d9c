#![no_main]
type Version = (u8, u8, u8);
libfuzzer_sys::fuzz_target!(|input: (Vec<(u8, u8, u8, u8)>, Version, Option<Version>)| {
    let (versions, installed, target) = input;
    let versions: Vec<(u64, u64, u64, u8)> = versions.into_iter().map(|(a, b, c, f)| (a.into(), b.into(), c.into(), f)).collect();
    let widen = |(a, b, c): Version| (a.into(), b.into(), c.into());
    canup::fuzz::planner(&versions, widen(installed), target.map(widen));
});
