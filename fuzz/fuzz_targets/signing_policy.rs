#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = hpccert_core::trust::namespaces::parse_signing_policy(s);
});
