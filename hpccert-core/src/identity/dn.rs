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

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

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
    name: Cow<'static, str>,
    /// Comparison key: the canonical name upper-cased.
    key: Cow<'static, str>,
}

/// (canonical name, comparison key (the name upper-cased), OID, aliases). Aliases are matched
/// case-insensitively. The types grid DNs use most come first.
const KNOWN_TYPES: &[(&str, &str, &str, &[&str])] = &[
    ("CN", "CN", "2.5.4.3", &["commonName"]),
    (
        "DC",
        "DC",
        "0.9.2342.19200300.100.1.25",
        &["domainComponent"],
    ),
    ("C", "C", "2.5.4.6", &["countryName"]),
    ("O", "O", "2.5.4.10", &["organizationName"]),
    ("OU", "OU", "2.5.4.11", &["organizationalUnitName"]),
    (
        "UID",
        "UID",
        "0.9.2342.19200300.100.1.1",
        &["USERID", "userId"],
    ),
    (
        "emailAddress",
        "EMAILADDRESS",
        "1.2.840.113549.1.9.1",
        &["E", "Email"],
    ),
    ("L", "L", "2.5.4.7", &["localityName"]),
    ("ST", "ST", "2.5.4.8", &["S", "stateOrProvinceName"]),
    ("SN", "SN", "2.5.4.4", &["surname"]),
    ("serialNumber", "SERIALNUMBER", "2.5.4.5", &[]),
    ("STREET", "STREET", "2.5.4.9", &["streetAddress"]),
    ("title", "TITLE", "2.5.4.12", &[]),
    ("postalCode", "POSTALCODE", "2.5.4.17", &[]),
    ("GN", "GN", "2.5.4.42", &["givenName"]),
    ("initials", "INITIALS", "2.5.4.43", &[]),
    (
        "generationQualifier",
        "GENERATIONQUALIFIER",
        "2.5.4.44",
        &[],
    ),
    ("dnQualifier", "DNQUALIFIER", "2.5.4.46", &[]),
    ("pseudonym", "PSEUDONYM", "2.5.4.65", &[]),
];

/// An attribute type as written: a name (`cn`, `emailAddress`: a letter, then letters, digits
/// and `-`) or a dotted OID (`2.5.4.3`).
fn is_valid_type(s: &str) -> bool {
    let b = s.as_bytes();
    let valid_name = b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
    valid_name
        || (s.contains('.')
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
}

impl AttributeType {
    /// Parse an attribute type as written (`cn`, `Email`, `2.5.4.3`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        if !is_valid_type(s) {
            return None;
        }
        Some(Self::from_name_or_oid(s))
    }

    /// Type for a dotted OID from a certificate.
    pub fn from_oid(oid: &str) -> Self {
        Self::from_name_or_oid(oid)
    }

    fn from_name_or_oid(s: &str) -> Self {
        for (name, key, oid, aliases) in KNOWN_TYPES {
            if s.eq_ignore_ascii_case(name)
                || s == *oid
                || aliases.iter().any(|a| s.eq_ignore_ascii_case(a))
            {
                return Self {
                    name: Cow::Borrowed(name),
                    key: Cow::Borrowed(key),
                };
            }
        }
        Self {
            name: Cow::Owned(s.to_string()),
            key: Cow::Owned(s.to_ascii_uppercase()),
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
#[derive(Clone)]
pub struct Rdn {
    avas: Avas,
}

/// Nearly every RDN has one AVA: it is kept inline (no allocation of its own).
#[derive(Clone)]
enum Avas {
    One(Ava),
    Many(Vec<Ava>),
}

impl Rdn {
    /// The RDN of the AVAs before a `+` (`pending`, emptied) and `last`.
    fn finish(pending: &mut Vec<Ava>, last: Ava) -> Self {
        if pending.is_empty() {
            return Self {
                avas: Avas::One(last),
            };
        }
        pending.push(last);
        Self {
            avas: Avas::Many(std::mem::take(pending)),
        }
    }

    pub fn avas(&self) -> &[Ava] {
        match &self.avas {
            Avas::One(ava) => std::slice::from_ref(ava),
            Avas::Many(avas) => avas,
        }
    }
}

impl fmt::Debug for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rdn").field("avas", &self.avas()).finish()
    }
}

/// A Distinguished Name, RDNs most significant first (certificate and slash-form order).
///
/// Immutable and shared: a clone (as a map's index and its entry hold) is a reference count.
#[derive(Clone)]
pub struct DistinguishedName {
    inner: Arc<DnInner>,
}

struct DnInner {
    rdns: Vec<Rdn>,
    /// Canonical comparison key: types canonical and upper-cased, AVAs of an RDN sorted.
    key: String,
}

impl fmt::Debug for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistinguishedName")
            .field("rdns", &self.inner.rdns)
            .field("key", &self.inner.key)
            .finish()
    }
}

impl DistinguishedName {
    /// Build from RDNs in certificate order.
    pub fn from_rdns(rdns: Vec<Rdn>) -> Self {
        let key = canonical_key(&rdns);
        Self {
            inner: Arc::new(DnInner { rdns, key }),
        }
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
    ///
    /// White space around the whole string is not part of the DN, unless escaped: the
    /// printer ([`Self::to_slash`]) escapes a trailing space or control character of the last
    /// value, so that it survives.
    pub fn parse_slash(s: &str) -> Result<Self, DnError> {
        let s = trim_end_unescaped(s.trim_start());
        if s.is_empty() {
            return Err(DnError::Empty);
        }
        if !s.starts_with('/') {
            return Err(DnError::MissingLeadingSlash(s.to_string()));
        }
        // Scanned by bytes: every delimiter is ASCII, so it never falls inside a UTF-8
        // sequence. Error columns are 1-based characters, as before.
        let b = s.as_bytes();
        let column = |pos: usize| s[..pos].chars().count() + 1;
        // at most one RDN per '/' (bounded: a long value full of slashes is not a reason to
        // allocate much)
        let slashes = b.iter().filter(|&&c| c == b'/').count();
        let mut rdns: Vec<Rdn> = Vec::with_capacity(slashes.min(16));
        let mut avas: Vec<Ava> = Vec::new();
        // position of the first character of the current TYPE=value
        let mut i = 1;
        loop {
            let start = i;
            // attribute type up to '='
            let Some(eq) = b[i..].iter().position(|&c| c == b'=').map(|p| i + p) else {
                return Err(DnError::MissingEquals {
                    column: column(start),
                    found: s[start..].to_string(),
                });
            };
            let attr = &s[start..eq];
            let attr_type =
                AttributeType::parse(attr.trim()).ok_or_else(|| DnError::BadAttributeType {
                    column: column(start),
                    attr: attr.to_string(),
                })?;
            i = eq + 1;
            let mut value = String::new();
            // start of the text not yet copied into `value`
            let mut run = i;
            let mut sep = None;
            while i < b.len() {
                match b[i] {
                    b'\\' => {
                        let next = s[i + 1..]
                            .chars()
                            .next()
                            .ok_or_else(|| DnError::BadEscape { column: column(i) })?;
                        value.push_str(&s[run..i]);
                        value.push(next);
                        i += 1 + next.len_utf8();
                        run = i;
                    }
                    c @ (b'/' | b'+') if starts_attribute(&s[i + 1..]) => {
                        sep = Some(c);
                        break;
                    }
                    _ => i += 1,
                }
            }
            value.push_str(&s[run..i]);
            if value.is_empty() {
                return Err(DnError::EmptyValue {
                    column: column(start),
                    attr: attr_type.name.to_string(),
                });
            }
            let ava = Ava {
                attr: attr_type,
                value,
            };
            if sep == Some(b'+') {
                avas.push(ava);
            } else {
                rdns.push(Rdn::finish(&mut avas, ava));
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
                    attr: attr_type.name.to_string(),
                });
            }
            let ava = Ava {
                attr: attr_type,
                value,
            };
            match sep {
                Some('+') => avas.push(ava),
                _ => {
                    // the RDNs are reversed below, the AVAs here: certificate order
                    let mut rdn = Rdn::finish(&mut avas, ava);
                    if let Avas::Many(avas) = &mut rdn.avas {
                        avas.reverse();
                    }
                    rdns.push(rdn);
                }
            }
            match sep {
                None => break,
                Some(_) => i += 1,
            }
        }
        rdns.reverse();
        Ok(Self::from_rdns(rdns))
    }

    /// The subject or issuer name of a parsed certificate.
    pub fn from_x509_name(name: &x509_parser::x509::X509Name<'_>) -> Result<Self, DnError> {
        let mut rdns = Vec::with_capacity(name.iter().count());
        let mut pending = Vec::new();
        for rdn in name.iter() {
            let mut atvs = rdn.iter().peekable();
            if atvs.peek().is_none() {
                return Err(DnError::Certificate("empty RDN".into()));
            }
            while let Some(atv) = atvs.next() {
                let ava = ava_from_x509(atv)?;
                if atvs.peek().is_some() {
                    pending.push(ava);
                } else {
                    rdns.push(Rdn::finish(&mut pending, ava));
                }
            }
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
        &self.inner.rdns
    }

    pub fn is_empty(&self) -> bool {
        self.inner.rdns.is_empty()
    }

    /// This DN with one more RDN appended (as an RFC 3820 proxy extends its issuer's name).
    pub fn is_parent_of(&self, child: &DistinguishedName) -> bool {
        child.rdns().len() == self.rdns().len() + 1
            && self
                .rdns()
                .iter()
                .zip(child.rdns())
                .all(|(a, b)| rdn_eq(a, b))
    }

    /// OpenSSL/Globus slash form (`/DC=org/CN=x`), escaped only where [`Self::parse_slash`]
    /// would otherwise misread it: `\`, a `/` or `+` followed by `TYPE=`, and a space or
    /// control character at the very end (which the parser would trim). Everything else is
    /// printed as is, as OpenSSL and Globus print names, so that grid-mapfile lines and
    /// namespace patterns match the same strings.
    pub fn to_slash(&self) -> String {
        let mut out = String::new();
        let last_rdn = self.rdns().len().saturating_sub(1);
        for (r, rdn) in self.rdns().iter().enumerate() {
            out.push('/');
            for (n, ava) in rdn.avas().iter().enumerate() {
                if n > 0 {
                    out.push('+');
                }
                out.push_str(&ava.attr.name);
                out.push('=');
                let at_end = r == last_rdn && n + 1 == rdn.avas().len();
                escape_slash_value(&ava.value, at_end, &mut out);
            }
        }
        out
    }

    /// RFC 4514 form (`CN=x,DC=org`).
    pub fn to_rfc4514(&self) -> String {
        let mut out = String::new();
        // the whole sequence reversed, AVAs of a multi-valued RDN included, as OpenSSL's
        // RFC 2253 printer does
        for (r, rdn) in self.rdns().iter().rev().enumerate() {
            if r > 0 {
                out.push(',');
            }
            for (n, ava) in rdn.avas().iter().rev().enumerate() {
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
        &self.inner.key
    }
}

impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.key == other.inner.key
    }
}
impl Eq for DistinguishedName {}
impl Hash for DistinguishedName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.key.hash(state);
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

/// Append one AVA's part of the comparison key: `TYPEKEY=value`, with the key separators in
/// the value escaped so that distinct DNs never share a key.
fn push_ava_key(ava: &Ava, out: &mut String) {
    out.push_str(&ava.attr.key);
    out.push('=');
    let v = ava.value.as_str();
    let mut run = 0;
    for (i, c) in v.bytes().enumerate() {
        if matches!(c, b'\\' | b'/' | b'+' | b'=') {
            out.push_str(&v[run..i]);
            out.push('\\');
            run = i;
        }
    }
    out.push_str(&v[run..]);
}

/// Append one RDN's part of the comparison key: its AVAs' keys, sorted, joined by `+`.
fn push_rdn_key(rdn: &Rdn, out: &mut String) {
    if let [ava] = rdn.avas() {
        push_ava_key(ava, out);
        return;
    }
    let mut parts: Vec<String> = rdn
        .avas()
        .iter()
        .map(|a| {
            let mut s = String::new();
            push_ava_key(a, &mut s);
            s
        })
        .collect();
    parts.sort();
    out.push_str(&parts.join("+"));
}

fn rdn_eq(a: &Rdn, b: &Rdn) -> bool {
    match (a.avas(), b.avas()) {
        ([x], [y]) => x.attr == y.attr && x.value == y.value,
        (x, y) if x.len() != y.len() => false,
        _ => {
            let (mut ka, mut kb) = (String::new(), String::new());
            push_rdn_key(a, &mut ka);
            push_rdn_key(b, &mut kb);
            ka == kb
        }
    }
}

fn canonical_key(rdns: &[Rdn]) -> String {
    let len: usize = rdns
        .iter()
        .flat_map(Rdn::avas)
        .map(|a| a.attr.key.len() + a.value.len() + 2)
        .sum();
    let mut key = String::with_capacity(len + 8);
    for rdn in rdns {
        key.push('/');
        push_rdn_key(rdn, &mut key);
    }
    key
}

/// `s` without trailing white space that is not escaped by a backslash (`\ ` at the end
/// stays; a dangling `\` stays too, for the parser to report).
fn trim_end_unescaped(s: &str) -> &str {
    let mut end = s.len();
    while let Some(c) = s[..end].chars().next_back() {
        if !c.is_whitespace() {
            break;
        }
        let start = end - c.len_utf8();
        // escaped when an odd run of backslashes precedes it (`\\` is an escaped backslash)
        let backslashes = s.as_bytes()[..start]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            break;
        }
        end = start;
    }
    &s[..end]
}

/// True when `rest` begins with `TYPE=` (a new RDN or AVA in slash form).
fn starts_attribute(rest: &str) -> bool {
    // a type is ASCII letters, digits, '-' and '.': stop at the first other character, which
    // must be the '='
    let end = rest
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'-' || c == b'.'));
    match end {
        Some(end) if end > 0 && rest.as_bytes()[end] == b'=' => is_valid_type(&rest[..end]),
        _ => false,
    }
}

/// `at_end`: the value ends the printed DN, so a trailing space or control character must
/// be escaped (the slash parser trims unescaped white space at the end of the string).
fn escape_slash_value(value: &str, at_end: bool, out: &mut String) {
    for (i, c) in value.char_indices() {
        let escape = match c {
            '\\' => true,
            '/' | '+' => starts_attribute(&value[i + 1..]),
            c => at_end && i + c.len_utf8() == value.len() && (c.is_whitespace() || c.is_control()),
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
}

/// RFC 4514 §2.4: the specials, a leading `#` or space and a trailing space are escaped with
/// a backslash (unescaped spaces around a value are insignificant, §3); control characters
/// (NUL included) are hex-escaped, as OpenSSL's RFC 2253 printer does, so the output is one
/// printable line.
fn escape_rfc4514_value(value: &str, out: &mut String) {
    let n = value.chars().count();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// DER content octets of the known types' OIDs, in [`KNOWN_TYPES`] order: certificate
/// attributes are matched without formatting their OIDs.
static KNOWN_OIDS_DER: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    KNOWN_TYPES
        .iter()
        .map(|(_, _, oid, _)| {
            x509_parser::asn1_rs::Oid::from_str(oid)
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or_default()
        })
        .collect()
});

fn ava_from_x509(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Result<Ava, DnError> {
    let oid = atv.attr_type();
    let value = atv
        .as_str()
        .map(str::to_string)
        .or_else(|_| bmp_string(atv.attr_value().data))
        .map_err(|_| {
            DnError::Certificate(format!(
                "attribute {} has a value that is not a string",
                oid.to_id_string()
            ))
        })?;
    let known = KNOWN_OIDS_DER
        .iter()
        .position(|der| der.as_slice() == oid.as_bytes());
    let attr = match known {
        Some(i) => {
            let (name, key, _, _) = KNOWN_TYPES[i];
            AttributeType {
                name: Cow::Borrowed(name),
                key: Cow::Borrowed(key),
            }
        }
        // also an OID in a non-minimal encoding, which the dotted form normalises
        None => AttributeType::from_oid(&oid.to_id_string()),
    };
    Ok(Ava { attr, value })
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

    /// What the `dn` fuzz target checks: a DN that parses re-parses to an equal DN from both
    /// printed forms.
    fn assert_round_trips(input: &str) -> DistinguishedName {
        let dn = DistinguishedName::parse(input).unwrap();
        let slash = dn.to_slash();
        assert_eq!(
            DistinguishedName::parse(&slash).as_ref(),
            Ok(&dn),
            "slash round trip of {input:?} via {slash:?}"
        );
        let rfc = dn.to_rfc4514();
        assert_eq!(
            DistinguishedName::parse(&rfc).as_ref(),
            Ok(&dn),
            "RFC 4514 round trip of {input:?} via {rfc:?}"
        );
        dn
    }

    fn value(dn: &DistinguishedName, rdn: usize, ava: usize) -> &str {
        dn.rdns()[rdn].avas()[ava].value()
    }

    #[test]
    fn fuzz_crash_trailing_control_characters_round_trip() {
        // found by the `dn` fuzz target: a trailing control character was printed bare in
        // slash form and trimmed by the slash parser (`C=\r` became `/C=`, an empty value)
        let dn = assert_round_trips("C=\r");
        assert_eq!(value(&dn, 0, 0), "\r");
        assert_eq!(dn.to_slash(), "/C=\\\r");
        assert_eq!(dn.to_rfc4514(), "C=\\0D");
        let dn = assert_round_trips("CN=a\r");
        assert_eq!(value(&dn, 0, 0), "a\r");
        assert_eq!(dn.to_slash(), "/CN=a\\\r");
        let dn = assert_round_trips("CN=a\t");
        assert_eq!(value(&dn, 0, 0), "a\t");
        assert_eq!(dn.to_slash(), "/CN=a\\\t");
        assert_eq!(dn.to_rfc4514(), "CN=a\\09");
        for c in [
            '\n', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}',
        ] {
            let dn = assert_round_trips(&format!("CN=a{c},O=x{c}"));
            assert_eq!(value(&dn, 0, 0), format!("x{c}"));
            assert_eq!(value(&dn, 1, 0), format!("a{c}"));
        }
        // the first crash artifact (as the target sees it: its longest UTF-8 prefix)
        let dn = assert_round_trips("CN=J\u{7f}hn Smith\r%\r\r\r\r\r\r\r\r\r\r\r");
        assert_eq!(
            dn.to_slash(),
            "/CN=J\u{7f}hn Smith\r%\r\r\r\r\r\r\r\r\r\r\\\r"
        );
    }

    #[test]
    fn fuzz_crash_escaped_trailing_space_round_trips() {
        // RFC 4514 §3: `\ ` (or `\20`) is part of the value, unescaped spaces around it are not
        let dn = assert_round_trips("CN=a\\ ");
        assert_eq!(value(&dn, 0, 0), "a ");
        assert_eq!(dn.to_slash(), "/CN=a\\ ");
        assert_eq!(dn.to_rfc4514(), "CN=a\\ ");
        assert_eq!(DistinguishedName::parse("CN=a\\20").unwrap(), dn);
        assert_eq!(DistinguishedName::parse("CN= a\\20  ").unwrap(), dn);
        let dn = assert_round_trips("CN=\\ a\\ \\ ,O=x");
        assert_eq!(value(&dn, 1, 0), " a  ");
        assert_eq!(dn.to_slash(), "/O=x/CN= a \\ ");
        let dn = assert_round_trips("CN=\\20");
        assert_eq!(value(&dn, 0, 0), " ");
        // unescaped: insignificant
        assert_eq!(
            DistinguishedName::parse("CN= a ").unwrap(),
            DistinguishedName::parse("CN=a").unwrap()
        );
    }

    #[test]
    fn fuzz_crash_inputs_before_plus_round_trip() {
        // the same values in a multi-valued RDN, before and after the `+`
        for v in ["\r", "a\r", "a\t", "a\\ "] {
            for input in [
                format!("CN={v}+O=b"),
                format!("O=b+CN={v}"),
                format!("CN={v}+O=b,DC=org"),
                format!("DC=org+CN={v},O=b"),
            ] {
                let dn = assert_round_trips(&input);
                let unescaped = v.replace('\\', "");
                assert!(
                    dn.rdns()
                        .iter()
                        .flat_map(|r| r.avas())
                        .any(|a| a.value() == unescaped),
                    "{input:?}: {dn:?}"
                );
            }
        }
    }

    #[test]
    fn slash_parser_keeps_escaped_trailing_white_space() {
        let dn = DistinguishedName::parse("/O=Grid/CN=a\\  \n").unwrap();
        assert_eq!(value(&dn, 1, 0), "a ");
        let dn = DistinguishedName::parse("  /O=Grid/CN=a\\\t").unwrap();
        assert_eq!(value(&dn, 1, 0), "a\t");
        // unescaped white space around the whole string is still not part of the DN
        let dn = DistinguishedName::parse(" /O=Grid/CN=a \t\r\n").unwrap();
        assert_eq!(value(&dn, 1, 0), "a");
        // inside the string, values are taken exactly (Globus compares strings)
        let dn = DistinguishedName::parse("/O=Grid /CN= a").unwrap();
        assert_eq!(value(&dn, 0, 0), "Grid ");
        assert_eq!(value(&dn, 1, 0), " a");
        assert_eq!(dn.to_slash(), "/O=Grid /CN= a");
        assert_round_trips("/O=Grid /CN= a");
        // a dangling backslash is still an error
        assert!(matches!(
            DistinguishedName::parse("/O=Grid/CN=a\\"),
            Err(DnError::BadEscape { .. })
        ));
        assert_round_trips("/O=Grid/CN=a\\\\");
        assert_round_trips("/O=Grid/CN=a\\\\ ");
    }

    #[test]
    fn known_types_match_certificate_oids() {
        for (i, (name, key, oid, _)) in KNOWN_TYPES.iter().enumerate() {
            let der = &KNOWN_OIDS_DER[i];
            assert!(!der.is_empty(), "{oid}");
            let parsed = x509_parser::asn1_rs::Oid::new(Cow::Borrowed(der.as_slice()));
            assert_eq!(&parsed.to_id_string(), oid);
            let from_oid = AttributeType::from_oid(oid);
            assert_eq!((from_oid.name(), &*from_oid.key), (*name, *key));
            assert_eq!(name.to_ascii_uppercase(), *key);
        }
    }

    #[test]
    fn parent_of_proxy_name() {
        let eec = DistinguishedName::parse("/O=Grid/CN=alice").unwrap();
        let proxy = DistinguishedName::parse("/O=Grid/CN=alice/CN=123456").unwrap();
        assert!(eec.is_parent_of(&proxy));
        assert!(!proxy.is_parent_of(&eec));
    }
}
