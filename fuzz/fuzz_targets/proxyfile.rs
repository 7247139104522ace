//! ProxyFile::from_pem (a proxy file a client hands over after an X.509 login) on arbitrary
//! bytes; a file that parses writes back a file that parses to the same certificates.
#![no_main]

use hpccert_core::trust::proxyfile::ProxyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ProxyFile::from_pem(data) {
        let written = file.to_pem().expect("a parsed proxy file writes back");
        let again = ProxyFile::from_pem(&written)
            .unwrap_or_else(|e| panic!("the written proxy file does not re-parse: {e}"));
        let der = |f: &ProxyFile| -> Vec<Vec<u8>> {
            f.chain().certificates().iter().map(|c| c.to_der().unwrap()).collect()
        };
        assert_eq!(der(&again), der(&file), "certificates changed in the round trip");
    }
});
