#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = hpccert_core::identity::gridmap::GridMapfile::parse(s);
});
