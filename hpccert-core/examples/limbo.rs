//! x509-limbo harness for hpccert's chain validator.
//!
//! Reads the whole suite (`{"version":1,"testcases":[...]}`) on stdin and writes
//! `{"version":1,"harness":"hpccert","results":[...]}` on stdout. Exits non-zero only for its
//! own internal errors (unreadable input, output failure); every verdict about a testcase,
//! including inputs that cannot be parsed, is a result.
//!
//! Each case is validated the way hpccert validates a user certificate, with the grid-only
//! parts turned off: no namespace policies, CRLs "if present", key policy on, and the
//! purpose taken from the case's `extended_key_usage`. Server host-name matching is not
//! part of user-certificate validation, so cases that are about it are reported SKIPPED.
//!
//! ```text
//! cargo run -q -p hpccert-core --example limbo < limbo.json > results.json
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use hpccert_core::trust::store::{Purpose, TrustStore};
use hpccert_core::trust::x509::{
    CrlPolicy, NamespaceEnforcement, PresentedChain, VerifyOptions, verify_chain,
};
use openssl::x509::{X509, X509Crl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Suite {
    version: u32,
    testcases: Vec<Testcase>,
}

#[derive(Debug, Deserialize)]
struct Testcase {
    id: String,
    #[serde(default)]
    features: Vec<String>,
    validation_time: Option<String>,
    #[serde(default)]
    trusted_certs: Vec<String>,
    #[serde(default)]
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    #[serde(default)]
    extended_key_usage: Vec<String>,
    max_chain_depth: Option<u32>,
    #[serde(default)]
    crls: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Results {
    version: u32,
    harness: &'static str,
    results: Vec<CaseResult>,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    id: String,
    actual_result: Verdict,
    context: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
enum Verdict {
    Success,
    Failure,
    Skipped,
}

/// Why a case's premise does not apply to user-certificate validation, if it does not.
///
/// Only server host-name matching qualifies: hpccert identifies users by their subject DN
/// and never matches a certificate against a host name. Name *constraints* are not
/// host-name matching (OpenSSL enforces them on every path) and are never skipped here.
fn skip_reason(case: &Testcase) -> Option<&'static str> {
    if case.id.starts_with("webpki::san::") {
        return Some(
            "server host-name matching against subjectAltName (CABF/webpki rules); \
             user certificates are identified by subject DN, never matched to a host name",
        );
    }
    if case.id.starts_with("webpki::cn::") {
        return Some(
            "server host-name matching against the subject CN (CABF BR 7.1.4.3); \
             user certificates are identified by subject DN, never matched to a host name",
        );
    }
    if case.id.ends_with("-wrong-san") {
        return Some(
            "the expected failure is a host-name mismatch (the SAN differs from the expected \
             peer name); user-certificate validation matches no host name",
        );
    }
    if case
        .features
        .iter()
        .any(|f| f == "pedantic-public-suffix-wildcard")
    {
        return Some(
            "public-suffix wildcard rules apply to server host-name matching only; \
             user-certificate validation matches no host name",
        );
    }
    None
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("validation_time {text:?} is not RFC 3339: {e}"))
}

fn purpose_of(case: &Testcase) -> Purpose {
    if case.extended_key_usage.iter().any(|e| e == "clientAuth") {
        Purpose::ClientAuth
    } else if case.extended_key_usage.iter().any(|e| e == "serverAuth") {
        Purpose::ServerAuth
    } else {
        Purpose::Any
    }
}

/// Validate one case: `Ok` context on success, `Err` context on refusal.
fn validate(case: &Testcase) -> Result<String, String> {
    let mut anchors = Vec::new();
    for (i, pem) in case.trusted_certs.iter().enumerate() {
        anchors.push(
            X509::from_pem(pem.as_bytes())
                .map_err(|e| format!("trusted certificate #{i} does not parse: {e}"))?,
        );
    }
    let mut crls = Vec::new();
    for (i, pem) in case.crls.iter().enumerate() {
        crls.push(
            X509Crl::from_pem(pem.as_bytes())
                .map_err(|e| format!("CRL #{i} does not parse: {e}"))?,
        );
    }
    let trust = TrustStore::from_certificates(anchors, crls, vec![])
        .map_err(|e| format!("trust store refused: {e}"))?;

    let mut certs = vec![
        X509::from_pem(case.peer_certificate.as_bytes())
            .map_err(|e| format!("peer certificate does not parse: {e}"))?,
    ];
    for (i, pem) in case.untrusted_intermediates.iter().enumerate() {
        certs.push(
            X509::from_pem(pem.as_bytes())
                .map_err(|e| format!("untrusted intermediate #{i} does not parse: {e}"))?,
        );
    }
    let presented = PresentedChain::from_certs(certs).map_err(|e| e.to_string())?;

    let defaults = VerifyOptions::default();
    let options = VerifyOptions {
        crl: CrlPolicy::IfPresent,
        namespaces: NamespaceEnforcement::Ignore,
        allow_limited_proxies: false,
        purpose: purpose_of(case),
        max_depth: case.max_chain_depth.unwrap_or(defaults.max_depth),
        key_policy: true,
    };
    let now = match &case.validation_time {
        Some(text) => parse_time(text)?,
        None => hpccert_core::clock::now(),
    };
    let verified = verify_chain(&trust, &presented, &options, now).map_err(|e| e.to_string())?;
    Ok(format!(
        "verified: {} (CA {}, path length {})",
        verified.identity().to_slash(),
        verified.ca().to_slash(),
        verified.path().len()
    ))
}

fn run_case(case: &Testcase) -> CaseResult {
    let (actual_result, context) = if let Some(reason) = skip_reason(case) {
        (Verdict::Skipped, reason.to_string())
    } else {
        match validate(case) {
            Ok(context) => (Verdict::Success, context),
            Err(context) => (Verdict::Failure, context),
        }
    };
    CaseResult {
        id: case.id.clone(),
        actual_result,
        context,
    }
}

fn run() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let suite: Suite =
        serde_json::from_str(&input).map_err(|e| format!("parsing the suite JSON: {e}"))?;
    if suite.version != 1 {
        return Err(format!("unsupported suite version {}", suite.version));
    }
    let results = Results {
        version: 1,
        harness: "hpccert",
        results: suite.testcases.iter().map(run_case).collect(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &results)
        .map_err(|e| format!("writing results: {e}"))?;
    writeln!(out)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing results: {e}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limbo: {e}");
            ExitCode::FAILURE
        }
    }
}
