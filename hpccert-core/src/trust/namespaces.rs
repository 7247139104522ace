//! Relying-party namespace constraints from an IGTF trust directory.
//!
//! Two file formats say which subject names a CA may issue:
//!
//! * `<hash>.namespaces` (EUGridPMA namespaces format, GFD.189):
//!   `TO Issuer "/C=DE/O=GermanGrid/CN=GridKa-CA" PERMIT Subject "/C=DE/O=GermanGrid/.*"`,
//!   with `DENY` rules and `SELF` for the CA the file belongs to; patterns are regular
//!   expressions matched against the whole slash-form subject.
//! * `<hash>.signing_policy` (Globus EACL): `access_id_CA X509 '/C=US/O=Globus/CN=CA'`,
//!   `pos_rights globus CA:sign`, `cond_subjects globus '"/C=US/O=Globus/*"'`; patterns are
//!   globs (`*` any string, `?` one character).
//!
//! Matching is case-insensitive (as the IGTF tools do; DNs in these files are written by
//! hand and attribute values such as country codes vary in case). When a CA has both files,
//! `.namespaces` wins: it is the newer, more expressive format and can deny. A subject must
//! match a PERMIT and no DENY.

use std::path::Path;

use regex::{Regex, RegexBuilder};
use thiserror::Error;

use crate::identity::dn::DistinguishedName;

/// Which file a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFormat {
    Namespaces,
    SigningPolicy,
}

impl std::fmt::Display for PolicyFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Namespaces => "namespaces",
            Self::SigningPolicy => "signing_policy",
        })
    }
}

/// A policy file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub message: String,
}

/// The issuer a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyIssuer {
    /// The CA whose file this is (`TO Issuer SELF`).
    SelfCa,
    Dn(DistinguishedName),
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    regex: Regex,
}

#[derive(Debug, Clone)]
enum Rule {
    Permit(Pattern),
    Deny(Pattern),
}

/// The rules for one issuing CA.
#[derive(Debug, Clone)]
pub struct NamespacePolicy {
    issuer: PolicyIssuer,
    format: PolicyFormat,
    rules: Vec<Rule>,
}

impl NamespacePolicy {
    pub fn issuer(&self) -> &PolicyIssuer {
        &self.issuer
    }

    pub fn format(&self) -> PolicyFormat {
        self.format
    }

    /// Resolve `SELF` to the CA's subject.
    pub fn resolve_self(&mut self, ca: &DistinguishedName) {
        if self.issuer == PolicyIssuer::SelfCa {
            self.issuer = PolicyIssuer::Dn(ca.clone());
        }
    }

    /// Whether `subject` may be issued under this policy; `Err` says why not.
    pub fn check(&self, subject: &DistinguishedName) -> Result<(), String> {
        let name = subject.to_slash();
        let mut permitted = None;
        for rule in &self.rules {
            match rule {
                Rule::Deny(p) if p.regex.is_match(&name) => {
                    return Err(format!("denied by {} rule {:?}", self.format, p.source));
                }
                Rule::Permit(p) if permitted.is_none() && p.regex.is_match(&name) => {
                    permitted = Some(p.source.clone());
                }
                _ => {}
            }
        }
        match permitted {
            Some(_) => Ok(()),
            None => {
                let allowed: Vec<&str> = self
                    .rules
                    .iter()
                    .filter_map(|r| match r {
                        Rule::Permit(p) => Some(p.source.as_str()),
                        Rule::Deny(_) => None,
                    })
                    .collect();
                Err(format!(
                    "outside the CA's {} (allowed: {})",
                    self.format,
                    allowed.join(", ")
                ))
            }
        }
    }
}

/// Read a `.namespaces` or `.signing_policy` file (chosen by its extension).
pub fn load_policy_file(path: &Path) -> Result<Vec<NamespacePolicy>, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("namespaces") => parse_namespaces(&text),
        _ => parse_signing_policy(&text),
    }
}

/// Split a line into tokens; quoted strings (`"..."` or `'...'`) are single tokens.
fn tokenize(line: &str, lineno: usize) -> Result<Vec<(String, bool)>, PolicyError> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            for d in chars.by_ref() {
                if d == c {
                    closed = true;
                    break;
                }
                s.push(d);
            }
            if !closed {
                return Err(PolicyError {
                    line: lineno,
                    message: format!("unterminated {c} quote"),
                });
            }
            tokens.push((s, true));
        } else {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                s.push(d);
                chars.next();
            }
            tokens.push((s, false));
        }
    }
    Ok(tokens)
}

/// Join `\`-continued lines, keeping the number of the first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let (body, continued) = match line.trim_end().strip_suffix('\\') {
            Some(b) => (b.to_string(), true),
            None => (line.to_string(), false),
        };
        let entry = current.get_or_insert((n + 1, String::new()));
        entry.1.push(' ');
        entry.1.push_str(&body);
        if !continued {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

fn regex(pattern: &str, lineno: usize) -> Result<Regex, PolicyError> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| PolicyError {
            line: lineno,
            message: format!("bad pattern {pattern:?}: {e}"),
        })
}

fn issuer_dn(text: &str, lineno: usize) -> Result<DistinguishedName, PolicyError> {
    DistinguishedName::parse_slash(text).map_err(|e| PolicyError {
        line: lineno,
        message: format!("bad issuer DN {text:?}: {e}"),
    })
}

/// Parse the EUGridPMA namespaces format.
pub fn parse_namespaces(text: &str) -> Result<Vec<NamespacePolicy>, PolicyError> {
    let mut policies: Vec<NamespacePolicy> = Vec::new();
    for (lineno, line) in logical_lines(text) {
        let tokens = tokenize(&line, lineno)?;
        if tokens.is_empty() {
            continue;
        }
        let words: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
        let bad = |m: &str| PolicyError {
            line: lineno,
            message: m.to_string(),
        };
        if words.len() != 6
            || !words[0].eq_ignore_ascii_case("TO")
            || !words[1].eq_ignore_ascii_case("Issuer")
            || !words[4].eq_ignore_ascii_case("Subject")
        {
            return Err(bad(
                "expected: TO Issuer \"DN\"|SELF PERMIT|DENY Subject \"pattern\"",
            ));
        }
        let issuer = if !tokens[2].1 && words[2].eq_ignore_ascii_case("SELF") {
            PolicyIssuer::SelfCa
        } else if tokens[2].1 {
            PolicyIssuer::Dn(issuer_dn(words[2], lineno)?)
        } else {
            return Err(bad("the issuer must be a quoted DN or SELF"));
        };
        if !tokens[5].1 {
            return Err(bad("the subject pattern must be quoted"));
        }
        let pattern = Pattern {
            source: words[5].to_string(),
            regex: regex(words[5], lineno)?,
        };
        let rule = if words[3].eq_ignore_ascii_case("PERMIT") {
            Rule::Permit(pattern)
        } else if words[3].eq_ignore_ascii_case("DENY") {
            Rule::Deny(pattern)
        } else {
            return Err(bad("expected PERMIT or DENY"));
        };
        match policies.iter_mut().find(|p| p.issuer == issuer) {
            Some(p) => p.rules.push(rule),
            None => policies.push(NamespacePolicy {
                issuer,
                format: PolicyFormat::Namespaces,
                rules: vec![rule],
            }),
        }
    }
    Ok(policies)
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// Parse the Globus EACL signing_policy format.
pub fn parse_signing_policy(text: &str) -> Result<Vec<NamespacePolicy>, PolicyError> {
    let mut policies: Vec<NamespacePolicy> = Vec::new();
    let mut current: Option<DistinguishedName> = None;
    let mut rights_ok = false;
    for (lineno, line) in logical_lines(text) {
        let tokens = tokenize(&line, lineno)?;
        if tokens.is_empty() {
            continue;
        }
        let bad = |m: String| PolicyError {
            line: lineno,
            message: m,
        };
        let key = tokens[0].0.to_ascii_lowercase();
        match key.as_str() {
            "access_id_ca" => {
                if tokens.len() != 3 || !tokens[1].0.eq_ignore_ascii_case("X509") {
                    return Err(bad("expected: access_id_CA X509 '/DN of the CA'".into()));
                }
                current = Some(issuer_dn(&tokens[2].0, lineno)?);
                rights_ok = false;
            }
            "pos_rights" => {
                if current.is_none() {
                    return Err(bad("pos_rights before access_id_CA".into()));
                }
                if tokens.len() != 3 || !tokens[2].0.eq_ignore_ascii_case("CA:sign") {
                    return Err(bad("expected: pos_rights globus CA:sign".into()));
                }
                rights_ok = true;
            }
            "cond_subjects" => {
                let Some(ca) = current.clone() else {
                    return Err(bad("cond_subjects before access_id_CA".into()));
                };
                if !rights_ok {
                    return Err(bad("cond_subjects without pos_rights globus CA:sign".into()));
                }
                if tokens.len() != 3 {
                    return Err(bad(
                        "expected: cond_subjects globus '\"pattern\" ...'".into()
                    ));
                }
                // the third token holds one or more double-quoted patterns
                let inner = tokenize(&tokens[2].0, lineno)?;
                if inner.is_empty() {
                    return Err(bad("cond_subjects lists no subject pattern".into()));
                }
                let mut rules = Vec::new();
                for (glob, _) in inner {
                    rules.push(Rule::Permit(Pattern {
                        regex: regex(&glob_to_regex(&glob), lineno)?,
                        source: glob,
                    }));
                }
                let issuer = PolicyIssuer::Dn(ca);
                match policies.iter_mut().find(|p| p.issuer == issuer) {
                    Some(p) => p.rules.extend(rules),
                    None => policies.push(NamespacePolicy {
                        issuer,
                        format: PolicyFormat::SigningPolicy,
                        rules,
                    }),
                }
            }
            "neg_rights" => {}
            other => return Err(bad(format!("unknown keyword {other:?}"))),
        }
    }
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).unwrap()
    }

    const NAMESPACES: &str = r#"
##############################################################################
#NAMESPACES-VERSION: 1.0
#
TO Issuer "/C=DE/O=GermanGrid/CN=GridKa-CA" \
  PERMIT Subject "/C=DE/O=GermanGrid/.*"
TO Issuer "/C=DE/O=GermanGrid/CN=GridKa-CA" DENY Subject "/C=DE/O=GermanGrid/OU=Banned/.*"
TO Issuer SELF PERMIT Subject "/C=DE/O=Other/.*"
"#;

    #[test]
    fn namespaces_permit_and_deny() {
        let p = parse_namespaces(NAMESPACES).unwrap();
        assert_eq!(p.len(), 2);
        let gridka = &p[0];
        assert_eq!(
            gridka.issuer,
            PolicyIssuer::Dn(dn("/C=DE/O=GermanGrid/CN=GridKa-CA"))
        );
        assert!(
            gridka
                .check(&dn("/C=DE/O=GermanGrid/OU=KIT/CN=Jane"))
                .is_ok()
        );
        assert!(
            gridka
                .check(&dn("/c=de/o=germangrid/OU=KIT/CN=Jane"))
                .is_ok()
        );
        let e = gridka
            .check(&dn("/C=DE/O=GermanGrid/OU=Banned/CN=Eve"))
            .unwrap_err();
        assert!(e.contains("denied"), "{e}");
        let e = gridka
            .check(&dn("/C=US/O=Elsewhere/CN=Mallory"))
            .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let mut own = p[1].clone();
        own.resolve_self(&dn("/C=DE/O=Other/CN=CA"));
        assert_eq!(own.issuer, PolicyIssuer::Dn(dn("/C=DE/O=Other/CN=CA")));
    }

    #[test]
    fn signing_policy_globs() {
        let text = r#"
# EACL
 access_id_CA      X509         '/C=US/O=Globus/CN=Globus Certification Authority'
 pos_rights        globus        CA:sign
 cond_subjects     globus       '"/C=us/O=Globus/*"  "/O=Grid/CN=?"'
"#;
        let p = parse_signing_policy(text).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].check(&dn("/C=US/O=Globus/OU=x/CN=y")).is_ok());
        assert!(p[0].check(&dn("/O=Grid/CN=a")).is_ok());
        assert!(p[0].check(&dn("/O=Grid/CN=ab")).is_err());
        // `.` in a glob is literal
        assert!(p[0].check(&dn("/C=USX/O=Globus/CN=y")).is_err());
    }

    #[test]
    fn malformed_files_name_the_line() {
        let e = parse_namespaces("TO Issuer \"/O=x\" ALLOW Subject \"/O=x/.*\"").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_namespaces("\n\nTO Issuer \"/O=x\" PERMIT Subject \"/O=x/(\"").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("bad pattern"));
        let e = parse_signing_policy("cond_subjects globus '\"/O=*\"'").unwrap_err();
        assert!(e.message.contains("before access_id_CA"));
        let e =
            parse_signing_policy("access_id_CA X509 '/O=x'\npos_rights globus CA:sign\nbogus x")
                .unwrap_err();
        assert_eq!(e.line, 3);
    }
}
