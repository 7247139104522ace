//! Wycheproof JWS conformance of the JWS layer (`token::jws`).
//!
//! The vectors live outside the repository, in `../shared/testdata/wycheproof/` relative to
//! the workspace root: `json_web_signature_test.json` (one key per group) and
//! `json_web_key_test.json` (a key set per group). For every case the group's key material
//! becomes a [`KeySet`] (`KeySet::from_jwks`), the token goes through
//! [`jws::parse_compact`] and [`jws::CompactJws::verify`] with every algorithm we support,
//! and the verdict is compared with the vector: `valid` must be accepted, `invalid` refused,
//! `acceptable` may go either way.
//!
//! A refused `valid` case is skipped, with its reason counted, only when the refusal comes
//! from a deliberate policy of the validator (HMAC never accepted, no ES512/P-521, `kid` must
//! be a plain token). Any other disagreement fails the test. When the vectors are absent the
//! test prints `SKIPPED` and passes, unless `HPCCERT_E2E_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hpccert_core::token::TokenError;
use hpccert_core::token::jws::{self, JwsAlgorithm, KeySet};
use serde_json::{Value, json};

const MAX_TOKEN_BYTES: usize = 16 * 1024;

const SKIP_HMAC: &str = "HMAC never accepted (public-key issuers only)";
const SKIP_P521: &str = "ES512 / P-521 not supported";
const SKIP_KID: &str = "kid is not a plain token (kid policy)";

fn vector_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/wycheproof"
    ))
}

fn required() -> bool {
    std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// What our validator made of one case.
#[derive(Debug)]
enum Verdict {
    Accepted,
    /// The token was refused by `parse_compact` or `verify`.
    TokenRefused(TokenError),
    /// The group's key material gave no usable key set.
    KeysRefused(String),
}

impl Verdict {
    fn accepted(&self) -> bool {
        matches!(self, Verdict::Accepted)
    }
    fn reason(&self) -> String {
        match self {
            Verdict::Accepted => "accepted".to_string(),
            Verdict::TokenRefused(e) => format!("token refused: {e}"),
            Verdict::KeysRefused(e) => format!("key set refused: {e}"),
        }
    }
}

/// The verification key material of a group, as a JWKS document. `public` when the group has
/// one; otherwise `private`, which is what symmetric (HMAC) groups carry: the secret is the
/// verification key there. A single JWK is wrapped as `{"keys":[jwk]}`.
fn group_jwks(group: &Value) -> Option<Value> {
    let material = group.get("public").or_else(|| group.get("private"))?;
    if material.get("keys").is_some() {
        Some(material.clone())
    } else {
        Some(json!({ "keys": [material] }))
    }
}

fn run_case(keys: &Result<KeySet, String>, token: &Value) -> Verdict {
    // The JSON serialization is not a compact token: hand its text to the compact parser,
    // which is all a daemon would see.
    let token = match token {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let jws = match jws::parse_compact(&token, MAX_TOKEN_BYTES) {
        Ok(j) => j,
        Err(e) => return Verdict::TokenRefused(e),
    };
    let keys = match keys {
        Ok(k) => k,
        Err(e) => return Verdict::KeysRefused(e.clone()),
    };
    match jws.verify(keys, &JwsAlgorithm::ALL) {
        Ok(()) => Verdict::Accepted,
        Err(e) => Verdict::TokenRefused(e),
    }
}

/// Whether the group's only key material is symmetric (`kty: oct`): an HMAC group.
fn symmetric_only(jwks: Option<&Value>) -> bool {
    jwks.and_then(|j| j["keys"].as_array())
        .is_some_and(|keys| !keys.is_empty() && keys.iter().all(|k| k["kty"] == "oct"))
}

/// The deliberate policy, if any, behind refusing a case the vectors call valid.
fn policy_refusal(hmac_group: bool, verdict: &Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::Accepted => None,
        // Nothing is ever accepted with a symmetric key, whatever else is wrong with the token.
        _ if hmac_group => Some(SKIP_HMAC),
        Verdict::TokenRefused(TokenError::HmacRefused(_)) => Some(SKIP_HMAC),
        Verdict::TokenRefused(TokenError::UnsupportedAlgorithm(a)) if a == "ES512" => {
            Some(SKIP_P521)
        }
        Verdict::TokenRefused(TokenError::BadKid(k)) if !k.contains("several keys") => {
            Some(SKIP_KID)
        }
        Verdict::KeysRefused(e) if e.contains("symmetric (oct)") => Some(SKIP_HMAC),
        Verdict::KeysRefused(e) if e.contains("P-521") || e.contains("ES521") => Some(SKIP_P521),
        Verdict::KeysRefused(e) if e.contains("unusable kid") => Some(SKIP_KID),
        Verdict::TokenRefused(_) | Verdict::KeysRefused(_) => None,
    }
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    agree: usize,
    accepted: usize,
    skipped: BTreeMap<&'static str, Vec<String>>,
    failures: Vec<String>,
}

impl Tally {
    fn skipped_total(&self) -> usize {
        self.skipped.values().map(Vec::len).sum()
    }
}

fn run_file(path: &Path, tally: &mut Tally) {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
    let groups = doc["testGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no testGroups"));
    let mut cases = 0;
    for group in groups {
        let group_comment = group["comment"].as_str().unwrap_or("-");
        let jwks = group_jwks(group);
        let hmac_group = symmetric_only(jwks.as_ref());
        let keys = match &jwks {
            Some(jwks) => KeySet::from_jwks(jwks.to_string().as_bytes()),
            None => Err("the group has no key".to_string()),
        };
        for test in group["tests"].as_array().unwrap() {
            cases += 1;
            let tc_id = test["tcId"].as_u64().unwrap();
            let comment = test["comment"].as_str().unwrap_or("-");
            let expected = test["result"].as_str().unwrap();
            let verdict = run_case(&keys, &test["jws"]);
            if verdict.accepted() {
                tally.accepted += 1;
            }
            let agrees = match expected {
                "valid" => verdict.accepted(),
                "invalid" => !verdict.accepted(),
                "acceptable" => true,
                other => panic!("{file} tcId {tc_id}: unknown result {other:?}"),
            };
            if agrees {
                tally.agree += 1;
                continue;
            }
            if expected == "valid"
                && let Some(reason) = policy_refusal(hmac_group, &verdict)
            {
                tally
                    .skipped
                    .entry(reason)
                    .or_default()
                    .push(format!("{file}#{tc_id}"));
                continue;
            }
            tally.failures.push(format!(
                "{file} tcId {tc_id} (group {group_comment:?}, test {comment:?}, flags {}): \
                 expected {expected}, ours: {}",
                test["flags"],
                verdict.reason()
            ));
        }
    }
    if let Some(n) = doc["numberOfTests"].as_u64() {
        assert_eq!(
            cases as u64, n,
            "{file}: ran {cases} cases, the file declares {n}"
        );
    }
    tally.cases += cases;
    println!("{file}: {cases} cases");
}

#[test]
fn wycheproof_jws_vectors() {
    let dir = vector_dir();
    let files = ["json_web_signature_test.json", "json_web_key_test.json"];
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "Wycheproof JWS vectors not found in {} ({})",
            dir.display(),
            missing.join(", ")
        );
        if required() {
            panic!("{msg} and HPCCERT_E2E_REQUIRED=1");
        }
        println!("SKIPPED: {msg}");
        return;
    }

    let mut tally = Tally::default();
    for f in files {
        run_file(&dir.join(f), &mut tally);
    }

    let reasons: Vec<String> = tally
        .skipped
        .iter()
        .map(|(reason, ids)| format!("{}: {reason}", ids.len()))
        .collect();
    println!("accepted: {} case(s)", tally.accepted);
    println!(
        "wycheproof JWS: {} agree, {} skipped ({})",
        tally.agree,
        tally.skipped_total(),
        reasons.join("; ")
    );
    for (reason, ids) in &tally.skipped {
        println!("  skipped [{reason}]: {}", ids.join(", "));
    }
    assert!(
        tally.failures.is_empty(),
        "{} disagreement(s) with Wycheproof:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    assert_eq!(
        tally.agree + tally.skipped_total(),
        tally.cases,
        "every case agrees or is skipped"
    );
    // Guard against a vacuous pass (e.g. every key refused): the valid vectors of the
    // supported algorithms (31 in the Wycheproof v0.3 files) must really be accepted.
    assert!(
        tally.accepted >= 31,
        "only {} case(s) accepted",
        tally.accepted
    );
}
