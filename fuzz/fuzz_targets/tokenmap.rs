//! The token map parser and the HTCondor importer on arbitrary UTF-8: no panic; a parsed
//! map prints back to text that parses to the same rules; imported lines always parse.
#![no_main]

use hpccert_core::identity::tokenmap::{TokenMapfile, import_condor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(map) = TokenMapfile::parse(s) {
        let printed: String = map.rules().iter().map(|r| format!("{r}\n")).collect();
        let again = TokenMapfile::parse(&printed)
            .unwrap_or_else(|e| panic!("printed map {printed:?} does not re-parse: {e:?}"));
        assert_eq!(again.len(), map.len());
        for (a, b) in map.rules().iter().zip(again.rules()) {
            assert_eq!((&a.issuer, &a.subject, &a.accounts), (&b.issuer, &b.subject, &b.accounts));
        }
    }
    let imported = import_condor(s);
    let text = imported.lines.join("\n");
    if let Err(e) = TokenMapfile::parse(&text) {
        panic!("imported lines {text:?} do not parse: {e:?}");
    }
});
