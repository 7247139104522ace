//! The token parser on arbitrary text: `parse_compact` (structure and header policy) never
//! panics, and neither does the JWKS parser on arbitrary bytes.
#![no_main]

use hpccert_core::token::KeySet;
use hpccert_core::token::jws::parse_compact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(jws) = parse_compact(s, 16 * 1024) {
            // a token that parses has a JSON-object header and a decodable payload
            assert!(jws.header.contains_key("alg"));
        }
    }
    let _ = KeySet::from_jwks(data);
});
