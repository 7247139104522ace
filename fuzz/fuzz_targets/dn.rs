//! DistinguishedName::parse on arbitrary UTF-8; a parsed DN must survive both printed forms.
#![no_main]

use hpccert_core::identity::dn::DistinguishedName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(dn) = DistinguishedName::parse(s) {
        let slash = dn.to_slash();
        let again = DistinguishedName::parse(&slash)
            .unwrap_or_else(|e| panic!("slash form {slash:?} of {s:?} does not re-parse: {e}"));
        assert_eq!(again, dn, "slash round trip of {s:?} via {slash:?}");
        let rfc = dn.to_rfc4514();
        let again = DistinguishedName::parse(&rfc)
            .unwrap_or_else(|e| panic!("RFC 4514 form {rfc:?} of {s:?} does not re-parse: {e}"));
        assert_eq!(again, dn, "RFC 4514 round trip of {s:?} via {rfc:?}");
    }
});
