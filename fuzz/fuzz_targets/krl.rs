//! OpenSSH KRLs on arbitrary bytes: `sshca::krl::parse` never panics (every length is checked
//! against the input), and a KRL that parses describes itself and parses again the same.
#![no_main]

use hpccert_core::trust::sshca::krl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = krl::parse(data) {
        assert!(!k.summary().is_empty());
        assert_eq!(krl::parse(data).ok(), Some(k));
    }
});
