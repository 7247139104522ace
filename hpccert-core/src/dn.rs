//! Distinguished Names in the two forms grid users meet them.
//!
//! * OpenSSL/Globus **slash form**, most significant RDN first:
//!   `/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251`
//! * **RFC 4514**, least significant RDN first:
//!   `CN=John Smith A251,O=Example,C=US,DC=cilogon,DC=org`
//!
//! A [`DistinguishedName`] keeps the RDNs in certificate (encoding) order, which is also the
//! slash-form order. Comparison follows the grid tools (Globus `gss_assist` gridmap, LCMAPS):
//!
//! * attribute types are case-insensitive, and the aliases grid CAs have used over the years
//!   are the same type: `emailAddress` = `E` = `Email`, `UID` = `USERID`, `ST` = `S`, and a
//!   dotted OID equals its short name;
//! * attribute **values are compared exactly** (byte for byte after unescaping), as Globus
//!   compares DN strings: `CN=John Smith` and `CN=john smith` are different people;
//! * the AVAs of a multi-valued RDN (`CN=a+UID=b`) are compared as a set.

use std::fmt;
use std::hash::{Hash, Hasher};

use thiserror::Error;

/// Why a DN string could not be parsed. Positions are 1-based character columns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DnError {
    #[error("empty DN")]
    Empty,
    #[error("a slash-form DN must start with '/' (got {0:?}); RFC 4514 DNs look like CN=...,O=...")]
    MissingLeadingSlash(String),
    #[error("column {column}: expected TYPE=value, found {found:?}")]
    MissingEquals { column: usize, found: String },
    #[error("column {column}: invalid attribute type {attr:?}")]
    BadAttributeType { column: usize, attr: String },
    #[error("column {column}: empty value for attribute {attr}")]
    EmptyValue { column: usize, attr: String },
    #[error("column {column}: dangling or invalid escape")]
    BadEscape { column: usize },
    #[error("escaped bytes are not valid UTF-8")]
    InvalidUtf8,
    #[error("column {column}: hex-encoded (#...) attribute values are not supported")]
    HexValue { column: usize },
    #[error("certificate name: {0}")]
    Certificate(String),
}

/// One attribute type, in its canonical spelling (`CN`, `emailAddress`, `UID`, ...).
#[derive(Debug, Clone)]
pub struct AttributeType {
    /// Spelling used when printing.
    name: String,
    /// Comparison key: the canonical name upper-cased.
    key: String,
}

/// (canonical name, OID, aliases). Aliases are matched case-insensitively.
const KNOWN_TYPES: &[(&str, &str, &[&str])] = &[
    ("CN", "2.5.4.3", &["commonName"]),
    ("SN", "2.5.4.4", &["surname"]),
    ("serialNumber", "2.5.4.5", &[]),
    ("C", "2.5.4.6", &["countryName"]),
    ("L", "2.5.4.7", &["localityName"]),
    ("ST", "2.5.4.8", &["S", "stateOrProvinceName"]),
    ("STREET", "2.5.4.9", &["streetAddress"]),
    ("O", "2.5.4.10", &["organizationName"]),
    ("OU", "2.5.4.11", &["organizationalUnitName"]),
    ("title", "2.5.4.12", &[]),
    ("postalCode", "2.5.4.17", &[]),
    ("GN", "2.5.4.42", &["givenName"]),
    ("initials", "2.5.4.43", &[]),
    ("generationQualifier", "2.5.4.44", &[]),
    ("dnQualifier", "2.5.4.46", &[]),
    ("pseudonym", "2.5.4.65", &[]),
    ("DC", "0.9.2342.19200300.100.1.25", &["domainComponent"]),
    ("UID", "0.9.2342.19200300.100.1.1", &["USERID", "userId"]),
    ("emailAddress", "1.2.840.113549.1.9.1", &["E", "Email"]),
];

impl AttributeType {
    /// Parse an attribute type as written (`cn`, `Email`, `2.5.4.3`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        let valid_name = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let valid_oid = !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && s.contains('.');
        if !valid_name && !valid_oid {
            return None;
        }
        Some(Self::from_name_or_oid(s))
    }

    /// Type for a dotted OID from a certificate.
    pub fn from_oid(oid: &str) -> Self {
        Self::from_name_or_oid(oid)
    }

    fn from_name_or_oid(s: &str) -> Self {
        for (name, oid, aliases) in KNOWN_TYPES {
            if s.eq_ignore_ascii_case(name)
                || s == *oid
                || aliases.iter().any(|a| s.eq_ignore_ascii_case(a))
            {
                return Self {
                    name: (*name).to_string(),
                    key: name.to_ascii_uppercase(),
                };
            }
        }
        Self {
            name: s.to_string(),
            key: s.to_ascii_uppercase(),
        }
    }

    /// The canonical spelling.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for AttributeType {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for AttributeType {}

/// One `TYPE=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    attr: AttributeType,
    value: String,
}

impl Ava {
    pub fn new(attr: AttributeType, value: impl Into<String>) -> Self {
        Self {
            attr,
            value: value.into(),
        }
    }
    pub fn attr(&self) -> &AttributeType {
        &self.attr
    }
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A relative distinguished name: one or more AVAs (more than one when multi-valued).
#[derive(Debug, Clone)]
pub struct Rdn {
    avas: Vec<Ava>,
}

impl Rdn {
    pub fn avas(&self) -> &[Ava] {
        &self.avas
    }
}

/// A Distinguished Name, RDNs most significant first (certificate and slash-form order).
#[derive(Debug, Clone)]
pub struct DistinguishedName {
    rdns: Vec<Rdn>,
    /// Canonical comparison key: types canonical and upper-cased, AVAs of an RDN sorted.
    key: String,
}

impl DistinguishedName {
    /// Build from RDNs in certificate order.
    pub fn from_rdns(rdns: Vec<Rdn>) -> Self {
        let key = canonical_key(&rdns);
        Self { rdns, key }
    }

    /// Parse either form: a leading `/` means slash form, anything else RFC 4514.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        if s.trim_start().starts_with('/') {
            Self::parse_slash(s)
        } else {
            Self::parse_rfc4514(s)
        }
    }

    /// Parse the OpenSSL/Globus slash form. A `/` or `+` starts a new RDN or AVA only when
    /// it is followed by `TYPE=`, so values such as `CN=host/login.example.org` keep their
    /// slash, as the grid tools read them. `\` escapes the next character.
    pub fn parse_slash(s: &str) -> Result<Self, DnError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DnError::Empty);
        }
        if !s.starts_with('/') {
            return Err(DnError::MissingLeadingSlash(s.to_string()));
        }
        let chars: Vec<char> = s.chars().collect();
        let mut rdns: Vec<Rdn> = Vec::new();
        let mut avas: Vec<Ava> = Vec::new();
        // position of the first character of the current TYPE=value
        let mut i = 1;
        loop {
            let start = i;
            // attribute type up to '='
            let mut attr = String::new();
            while i < chars.len() && chars[i] != '=' {
                attr.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err(DnError::MissingEquals {
                    column: start + 1,
                    found: chars[start..].iter().collect(),
                });
            }
            let attr_type = AttributeType::parse(attr.trim()).ok_or(DnError::BadAttributeType {
                column: start + 1,
                attr: attr.clone(),
            })?;
            i += 1; // '='
            let mut value = String::new();
            let mut sep = None;
            while i < chars.len() {
                let c = chars[i];
                if c == '\\' {
                    let next = chars
                        .get(i + 1)
                        .ok_or(DnError::BadEscape { column: i + 1 })?;
                    value.push(*next);
                    i += 2;
                    continue;
                }
                if (c == '/' || c == '+') && starts_attribute(&chars[i + 1..]) {
                    sep = Some(c);
                    break;
                }
                value.push(c);
                i += 1;
            }
            if value.is_empty() {
                return Err(DnError::EmptyValue {
                    column: start + 1,
                    attr: attr_type.name.clone(),
                });
            }
            avas.push(Ava {
                attr: attr_type,
                value,
            });
            match sep {
                Some('+') => {}
                _ => rdns.push(Rdn {
                    avas: std::mem::take(&mut avas),
                }),
            }
            match sep {
                None => break,
                Some(_) => i += 1,
            }
        }
        Ok(Self::from_rdns(rdns))
    }

    /// Parse RFC 4514 (`CN=x,O=y,DC=org`), least significant RDN first.
    pub fn parse_rfc4514(s: &str) -> Result<Self, DnError> {
        if s.trim().is_empty() {
            return Err(DnError::Empty);
        }
        let chars: Vec<char> = s.chars().collect();
        let mut rdns: Vec<Rdn> = Vec::new();
        let mut avas: Vec<Ava> = Vec::new();
        let mut i = 0;
        loop {
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            let start = i;
            let mut attr = String::new();
            while i < chars.len() && chars[i] != '=' {
                if matches!(chars[i], ',' | ';' | '+') {
                    break;
                }
                attr.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() || chars[i] != '=' {
                return Err(DnError::MissingEquals {
                    column: start + 1,
                    found: chars[start..i.min(chars.len())].iter().collect(),
                });
            }
            let attr_type = AttributeType::parse(attr.trim()).ok_or(DnError::BadAttributeType {
                column: start + 1,
                attr: attr.clone(),
            })?;
            i += 1;
            if chars.get(i) == Some(&'#') {
                return Err(DnError::HexValue { column: i + 1 });
            }
            let mut bytes: Vec<u8> = Vec::new();
            // index in `bytes` after the last escaped or non-space character: trailing
            // unescaped spaces are not part of the value
            let mut keep = 0;
            let mut leading = true;
            let mut sep = None;
            while i < chars.len() {
                let c = chars[i];
                if c == '\\' {
                    let a = *chars
                        .get(i + 1)
                        .ok_or(DnError::BadEscape { column: i + 1 })?;
                    if let (Some(h), Some(l)) = (
                        a.to_digit(16),
                        chars.get(i + 2).and_then(|c| c.to_digit(16)),
                    ) {
                        // two hex digits: one byte; the value must be UTF-8 as a whole
                        bytes.push(((h << 4) | l) as u8);
                        i += 3;
                    } else if "\\\"+,;<>=# ".contains(a) {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(a.encode_utf8(&mut buf).as_bytes());
                        i += 2;
                    } else {
                        return Err(DnError::BadEscape { column: i + 1 });
                    }
                    keep = bytes.len();
                    leading = false;
                    continue;
                }
                if matches!(c, ',' | ';' | '+') {
                    sep = Some(c);
                    break;
                }
                if c == ' ' && leading {
                    i += 1;
                    continue;
                }
                leading = false;
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                if c != ' ' {
                    keep = bytes.len();
                }
                i += 1;
            }
            bytes.truncate(keep);
            let value = String::from_utf8(bytes).map_err(|_| DnError::InvalidUtf8)?;
            if value.is_empty() {
                return Err(DnError::EmptyValue {
                    column: start + 1,
                    attr: attr_type.name.clone(),
                });
            }
            avas.push(Ava {
                attr: attr_type,
                value,
            });
            match sep {
                Some('+') => {}
                _ => rdns.push(Rdn {
                    avas: std::mem::take(&mut avas),
                }),
            }
            match sep {
                None => break,
                Some(_) => i += 1,
            }
        }
        rdns.reverse();
        for rdn in &mut rdns {
            rdn.avas.reverse();
        }
        Ok(Self::from_rdns(rdns))
    }

    /// The subject or issuer name of a parsed certificate.
    pub fn from_x509_name(name: &x509_parser::x509::X509Name<'_>) -> Result<Self, DnError> {
        let mut rdns = Vec::new();
        for rdn in name.iter() {
            let mut avas = Vec::new();
            for atv in rdn.iter() {
                let oid = atv.attr_type().to_id_string();
                let value = atv
                    .as_str()
                    .map(str::to_string)
                    .or_else(|_| bmp_string(atv.attr_value().data))
                    .map_err(|_| {
                        DnError::Certificate(format!(
                            "attribute {oid} has a value that is not a string"
                        ))
                    })?;
                avas.push(Ava {
                    attr: AttributeType::from_oid(&oid),
                    value,
                });
            }
            if avas.is_empty() {
                return Err(DnError::Certificate("empty RDN".into()));
            }
            rdns.push(Rdn { avas });
        }
        Ok(Self::from_rdns(rdns))
    }

    /// The subject name of a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, DnError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| DnError::Certificate(e.to_string()))?;
        Self::from_x509_name(cert.subject())
    }

    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// This DN with one more RDN appended (as an RFC 3820 proxy extends its issuer's name).
    pub fn is_parent_of(&self, child: &DistinguishedName) -> bool {
        child.rdns.len() == self.rdns.len() + 1
            && self
                .rdns
                .iter()
                .zip(&child.rdns)
                .all(|(a, b)| rdn_key(a) == rdn_key(b))
    }

    /// OpenSSL/Globus slash form (`/DC=org/CN=x`).
    pub fn to_slash(&self) -> String {
        let mut out = String::new();
        for rdn in &self.rdns {
            out.push('/');
            for (n, ava) in rdn.avas.iter().enumerate() {
                if n > 0 {
                    out.push('+');
                }
                out.push_str(&ava.attr.name);
                out.push('=');
                escape_slash_value(&ava.value, &mut out);
            }
        }
        out
    }

    /// RFC 4514 form (`CN=x,DC=org`).
    pub fn to_rfc4514(&self) -> String {
        let mut out = String::new();
        // the whole sequence reversed, AVAs of a multi-valued RDN included, as OpenSSL's
        // RFC 2253 printer does
        for (r, rdn) in self.rdns.iter().rev().enumerate() {
            if r > 0 {
                out.push(',');
            }
            for (n, ava) in rdn.avas.iter().rev().enumerate() {
                if n > 0 {
                    out.push('+');
                }
                out.push_str(&ava.attr.name);
                out.push('=');
                escape_rfc4514_value(&ava.value, &mut out);
            }
        }
        out
    }

    /// The comparison key (canonical, unambiguous); equal keys mean equal DNs.
    pub fn canonical(&self) -> &str {
        &self.key
    }
}

impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for DistinguishedName {}
impl Hash for DistinguishedName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for DistinguishedName {
    /// Grid convention: slash form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_slash())
    }
}

impl std::str::FromStr for DistinguishedName {
    type Err = DnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn rdn_key(rdn: &Rdn) -> String {
    let mut parts: Vec<String> = rdn
        .avas
        .iter()
        .map(|a| {
            let mut s = a.attr.key.clone();
            s.push('=');
            // escape the key separators so that distinct DNs never share a key
            for c in a.value.chars() {
                if matches!(c, '\\' | '/' | '+' | '=') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        })
        .collect();
    parts.sort();
    parts.join("+")
}

fn canonical_key(rdns: &[Rdn]) -> String {
    let mut key = String::new();
    for rdn in rdns {
        key.push('/');
        key.push_str(&rdn_key(rdn));
    }
    key
}

/// True when `rest` begins with `TYPE=` (a new RDN or AVA in slash form).
fn starts_attribute(rest: &[char]) -> bool {
    let end = rest.iter().position(|c| *c == '=');
    let Some(end) = end else { return false };
    if end == 0 {
        return false;
    }
    let attr: String = rest[..end].iter().collect();
    AttributeType::parse(&attr).is_some()
}

fn escape_slash_value(value: &str, out: &mut String) {
    let chars: Vec<char> = value.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '/' | '+' if starts_attribute(&chars[i + 1..]) => {
                out.push('\\');
                out.push(*c);
            }
            _ => out.push(*c),
        }
    }
}

fn escape_rfc4514_value(value: &str, out: &mut String) {
    let n = value.chars().count();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// Decode a BMPString (UCS-2 big endian) value, which some old CAs used.
fn bmp_string(data: &[u8]) -> Result<String, ()> {
    if !data.len().is_multiple_of(2) {
        return Err(());
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CILOGON: &str = "/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251";

    #[test]
    fn slash_and_rfc4514_convert_both_ways() {
        let dn = DistinguishedName::parse(CILOGON).unwrap();
        assert_eq!(
            dn.to_rfc4514(),
            "CN=John Smith A251,O=Example,C=US,DC=cilogon,DC=org"
        );
        let back = DistinguishedName::parse(&dn.to_rfc4514()).unwrap();
        assert_eq!(back, dn);
        assert_eq!(back.to_slash(), CILOGON);
    }

    #[test]
    fn attribute_types_are_case_insensitive_with_aliases() {
        let a = DistinguishedName::parse("/DC=org/UID=jdoe/emailAddress=j@x.org/CN=J").unwrap();
        for other in [
            "/dc=org/USERID=jdoe/E=j@x.org/cn=J",
            "/DC=org/UserID=jdoe/Email=j@x.org/CN=J",
            "/0.9.2342.19200300.100.1.25=org/UID=jdoe/1.2.840.113549.1.9.1=j@x.org/2.5.4.3=J",
        ] {
            assert_eq!(a, DistinguishedName::parse(other).unwrap(), "{other}");
        }
    }

    #[test]
    fn values_are_compared_exactly() {
        let a = DistinguishedName::parse("/O=Grid/CN=John Smith").unwrap();
        assert_ne!(
            a,
            DistinguishedName::parse("/O=Grid/CN=john smith").unwrap()
        );
        assert_ne!(
            a,
            DistinguishedName::parse("/O=Grid/CN=John  Smith").unwrap()
        );
        assert_ne!(
            a,
            DistinguishedName::parse("/O=Grid/CN=John Smith/CN=1").unwrap()
        );
    }

    #[test]
    fn slash_inside_value_is_kept_when_no_attribute_follows() {
        let dn = DistinguishedName::parse("/O=Grid/CN=host/login.example.org").unwrap();
        assert_eq!(dn.rdns().len(), 2);
        assert_eq!(dn.rdns()[1].avas()[0].value(), "host/login.example.org");
        assert_eq!(dn.to_rfc4514(), "CN=host/login.example.org,O=Grid");
        assert_eq!(dn.to_slash(), "/O=Grid/CN=host/login.example.org");
    }

    #[test]
    fn ambiguous_slash_is_escaped_and_round_trips() {
        let dn = DistinguishedName::parse_rfc4514("CN=a/CN=b,O=Grid").unwrap();
        assert_eq!(dn.rdns().len(), 2);
        let slash = dn.to_slash();
        assert_eq!(slash, "/O=Grid/CN=a\\/CN=b");
        assert_eq!(DistinguishedName::parse(&slash).unwrap(), dn);
    }

    #[test]
    fn multi_valued_rdns_compare_as_sets() {
        let a = DistinguishedName::parse("/O=Grid/CN=Jane+UID=jane").unwrap();
        assert_eq!(a.rdns().len(), 2);
        assert_eq!(a.rdns()[1].avas().len(), 2);
        let b = DistinguishedName::parse("UID=jane+CN=Jane,O=Grid").unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            DistinguishedName::parse("/O=Grid/CN=Jane/UID=jane").unwrap()
        );
    }

    #[test]
    fn rfc4514_escapes() {
        let dn = DistinguishedName::parse_rfc4514(r"CN=Smith\, John \2B1,O=A\22B\22,C=US").unwrap();
        assert_eq!(dn.rdns()[2].avas()[0].value(), "Smith, John +1");
        assert_eq!(dn.rdns()[1].avas()[0].value(), "A\"B\"");
        let printed = dn.to_rfc4514();
        assert_eq!(printed, r#"CN=Smith\, John \+1,O=A\"B\",C=US"#);
        assert_eq!(DistinguishedName::parse_rfc4514(&printed).unwrap(), dn);
        // UTF-8 through hex escapes
        let dn = DistinguishedName::parse_rfc4514(r"CN=J\C3\BCrgen,O=X").unwrap();
        assert_eq!(dn.rdns()[1].avas()[0].value(), "Jürgen");
        assert_eq!(dn.to_slash(), "/O=X/CN=Jürgen");
        // spaces around separators are not part of values
        let dn = DistinguishedName::parse_rfc4514("CN = a b , O=x ").unwrap();
        assert_eq!(dn.to_slash(), "/O=x/CN=a b");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(DistinguishedName::parse(""), Err(DnError::Empty));
        assert!(matches!(
            DistinguishedName::parse("/CN"),
            Err(DnError::MissingEquals { .. })
        ));
        // a slash not followed by TYPE= belongs to the value
        assert_eq!(
            DistinguishedName::parse("/O=Grid/CN").unwrap().rdns()[0].avas()[0].value(),
            "Grid/CN"
        );
        assert!(matches!(
            DistinguishedName::parse("/C N=x/O=Grid"),
            Err(DnError::BadAttributeType { column: 2, .. })
        ));
        assert!(matches!(
            DistinguishedName::parse("/O=/CN=x"),
            Err(DnError::EmptyValue { .. })
        ));
        assert!(matches!(
            DistinguishedName::parse("CN=x\\"),
            Err(DnError::BadEscape { .. })
        ));
        assert!(matches!(
            DistinguishedName::parse("CN=#0403"),
            Err(DnError::HexValue { .. })
        ));
        assert!(matches!(
            DistinguishedName::parse_slash("CN=x"),
            Err(DnError::MissingLeadingSlash(_))
        ));
    }

    #[test]
    fn distinct_dns_never_share_a_key() {
        let a = DistinguishedName::parse_rfc4514("CN=a/O=b").unwrap();
        let b = DistinguishedName::parse_slash("/O=b/CN=a").unwrap();
        assert_ne!(a, b);
        let c = DistinguishedName::parse_rfc4514(r"CN=a\+O=b").unwrap();
        let d = DistinguishedName::parse_rfc4514("CN=a+O=b").unwrap();
        assert_ne!(c, d);
    }

    #[test]
    fn parent_of_proxy_name() {
        let eec = DistinguishedName::parse("/O=Grid/CN=alice").unwrap();
        let proxy = DistinguishedName::parse("/O=Grid/CN=alice/CN=123456").unwrap();
        assert!(eec.is_parent_of(&proxy));
        assert!(!proxy.is_parent_of(&eec));
    }
}
