//! The grid-mapfile: `"DN" account[,account...]`, as Globus `gss_assist` reads it.
//!
//! Syntax accepted (a superset of what `grid-mapfile-add-entry` writes):
//!
//! * one mapping per line: a DN in slash form, quoted (`"/O=Grid/CN=Jane Doe"`) or, when it
//!   has no white space, unquoted; then white space; then a comma-separated list of accounts
//!   (white space around the commas is allowed);
//! * inside the DN, `\"`, `\\` and `\xHH` (a byte; bytes must form UTF-8) are escapes, and
//!   `\` before any other character stands for that character;
//! * `#` starts a comment line; blank lines are ignored; a `#` comment may also follow the
//!   account list after white space;
//! * the first account is the default one; an account starting with `.` is a pool (`.atlas`).
//!
//! **A DN on several lines**: like classic Globus, which stops at the first matching line,
//! only the first line counts; later lines for the same DN are kept in
//! [`GridMapfile::duplicates`] so that `gridmap-tool check` reports them.
//!
//! Parsing never skips a line silently: a file either becomes a [`GridMapfile`] or a list of
//! line-numbered [`LineError`]s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::identity::dn::{DistinguishedName, DnError};

/// A local account name (POSIX portable user name rules, as `useradd` accepts them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_first = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let body = s.strip_suffix('$').unwrap_or(s);
        let ok_rest = body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if s.is_empty() {
            Err("empty account name".into())
        } else if s.len() > 32 {
            Err(format!("account name {s:?} is longer than 32 characters"))
        } else if !ok_first || !ok_rest || s.bytes().all(|b| b.is_ascii_digit()) {
            Err(format!("invalid account name {s:?}"))
        } else {
            Ok(Self(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One target of a mapping line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MappedAccount {
    /// A named local account.
    Local(AccountName),
    /// A pool (`.atlas`): the account is leased from the pool at login.
    Pool(AccountName),
}

impl MappedAccount {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_prefix('.') {
            Some(pool) => AccountName::parse(pool)
                .map(Self::Pool)
                .map_err(|e| format!("pool: {e}")),
            None => AccountName::parse(s).map(Self::Local),
        }
    }
}

impl fmt::Display for MappedAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(a) => write!(f, "{a}"),
            Self::Pool(p) => write!(f, ".{p}"),
        }
    }
}

/// One mapping line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridMapEntry {
    /// 1-based line number in the file.
    pub line: usize,
    pub dn: DistinguishedName,
    /// Never empty; the first is the default account.
    pub accounts: Vec<MappedAccount>,
}

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}line {line}: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
pub struct LineError {
    pub path: Option<PathBuf>,
    pub line: usize,
    pub message: String,
}

/// Why a line-oriented list that may be missing (the suspension list, the restrictions)
/// cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LineFileError {
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Syntax(Vec<LineError>),
}

/// Load such a list: a missing file is parsed as empty text; errors name `path`.
pub(crate) fn load_line_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, Vec<LineError>>,
) -> Result<T, LineFileError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|message| LineFileError::Io {
        path: path.to_path_buf(),
        message,
    })?;
    parse(&text).map_err(|errors| LineFileError::Syntax(at_path(errors, path)))
}

/// Every line of `text` through `parse_line` (`None` for blank and comment lines), numbered
/// from 1; every bad line is reported.
pub(crate) fn parse_lines<T>(
    text: &str,
    parse_line: impl Fn(&str) -> Result<Option<T>, String>,
) -> Result<Vec<(usize, T)>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        match parse_line(raw) {
            Ok(Some(entry)) => entries.push((n + 1, entry)),
            Ok(None) => {}
            Err(message) => errors.push(LineError {
                path: None,
                line: n + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// `errors` of a parse, naming `path`.
fn at_path(errors: Vec<LineError>, path: &Path) -> Vec<LineError> {
    errors
        .into_iter()
        .map(|e| LineError {
            path: Some(path.to_path_buf()),
            ..e
        })
        .collect()
}

/// Why a grid-mapfile could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GridMapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Syntax(Vec<LineError>),
}

/// A later line for a DN already mapped on an earlier line (ignored, as in Globus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub dn: DistinguishedName,
    pub first_line: usize,
    pub line: usize,
}

/// A parsed grid-mapfile with O(1) lookup by DN.
#[derive(Debug, Clone, Default)]
pub struct GridMapfile {
    entries: Vec<GridMapEntry>,
    index: HashMap<DistinguishedName, usize>,
    duplicates: Vec<Duplicate>,
}

/// The content of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedLine {
    Blank,
    Comment,
    Mapping {
        dn: DistinguishedName,
        accounts: Vec<MappedAccount>,
    },
}

impl GridMapfile {
    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, GridMapError> {
        let text = std::fs::read(path).map_err(|source| GridMapError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8_lossy(&text);
        Self::parse(&text).map_err(|errors| {
            GridMapError::Syntax(
                errors
                    .into_iter()
                    .map(|e| LineError {
                        path: Some(path.to_path_buf()),
                        ..e
                    })
                    .collect(),
            )
        })
    }

    /// Parse text; every bad line is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let mut map = GridMapfile::default();
        // one mapping per line at most: size the table once instead of growing it
        let lines = memchr_count(b'\n', text.as_bytes()) + 1;
        map.entries.reserve(lines);
        map.index.reserve(lines);
        let mut errors = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            match parse_line(raw) {
                Ok(ParsedLine::Mapping { dn, accounts }) => {
                    map.push(GridMapEntry { line, dn, accounts })
                }
                Ok(_) => {}
                Err(message) => errors.push(LineError {
                    path: None,
                    line,
                    message,
                }),
            }
        }
        if errors.is_empty() {
            map.entries.shrink_to_fit();
            Ok(map)
        } else {
            Err(errors)
        }
    }

    fn push(&mut self, entry: GridMapEntry) {
        // a DN clone is a reference count
        match self.index.entry(entry.dn.clone()) {
            Entry::Occupied(first) => self.duplicates.push(Duplicate {
                dn: entry.dn,
                first_line: self.entries[*first.get()].line,
                line: entry.line,
            }),
            Entry::Vacant(slot) => {
                slot.insert(self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// The mapping that counts for `dn` (the first line that names it).
    pub fn lookup(&self, dn: &DistinguishedName) -> Option<&GridMapEntry> {
        self.index.get(dn).map(|&i| &self.entries[i])
    }

    /// Effective entries, in file order (duplicates excluded).
    pub fn entries(&self) -> &[GridMapEntry] {
        &self.entries
    }

    /// Later lines for DNs already mapped earlier.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parse one line of a grid-mapfile.
pub fn parse_line(raw: &str) -> Result<ParsedLine, String> {
    let line = raw.trim_start();
    if line.trim_end().is_empty() {
        return Ok(ParsedLine::Blank);
    }
    if line.starts_with('#') {
        return Ok(ParsedLine::Comment);
    }
    let (dn_text, rest) = if let Some(body) = line.strip_prefix('"') {
        let end = closing_quote(body).ok_or("missing closing quote after the DN")?;
        (unescape(&body[..end])?, &body[end + 1..])
    } else {
        let end = line
            .find(char::is_whitespace)
            .ok_or("nothing follows the DN (expected an account)")?;
        (unescape(&line[..end])?, &line[end..])
    };
    if !rest.starts_with(char::is_whitespace) && !rest.is_empty() {
        return Err("expected white space after the closing quote".into());
    }
    let dn = DistinguishedName::parse_slash(&dn_text).map_err(|e| match e {
        DnError::MissingLeadingSlash(_) => {
            "the DN must be in slash form (/C=.../CN=...); `gridmap-tool convert-dn DN --to openssl` converts it".to_string()
        }
        e => format!("bad DN: {e}"),
    })?;
    // accounts: up to a trailing comment
    let mut list = rest.trim();
    if let Some(hash) = find_comment(list) {
        list = list[..hash].trim_end();
    }
    if list.is_empty() {
        return Err("no account after the DN".into());
    }
    let mut accounts = Vec::with_capacity(memchr_count(b',', list.as_bytes()) + 1);
    for part in list.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty account in list {list:?}"));
        }
        if part.contains(char::is_whitespace) {
            return Err(format!(
                "unexpected text after the accounts: {part:?} (accounts are separated by commas)"
            ));
        }
        let account = MappedAccount::parse(part)?;
        if accounts.contains(&account) {
            return Err(format!("account {account} listed twice"));
        }
        accounts.push(account);
    }
    Ok(ParsedLine::Mapping { dn, accounts })
}

/// Byte offset of the unescaped closing quote in `body` (text after the opening quote).
fn closing_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A `#` preceded by white space starts a trailing comment.
fn find_comment(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| b[i] == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()))
}

/// Number of `needle` bytes in `haystack`.
fn memchr_count(needle: u8, haystack: &[u8]) -> usize {
    haystack.iter().filter(|&&b| b == needle).count()
}

/// [`unescape_dn`] without a copy when there is nothing to unescape (the common case).
fn unescape(s: &str) -> Result<Cow<'_, str>, String> {
    if s.contains('\\') {
        unescape_dn(s).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(s))
    }
}

/// Undo the grid-mapfile quoting level: `\xHH` is a byte and `\"` a quote; other escapes
/// (`\\`, `\/`, ...) are the DN's own and are left for the DN parser.
pub fn unescape_dn(s: &str) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let Some(&next) = bytes.get(i + 1) else {
                return Err("dangling backslash at the end of the DN".into());
            };
            if next == b'x'
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
            {
                let hex = &s[i + 2..i + 4];
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 4;
                continue;
            }
            if next == b'"' {
                out.push(b'"');
            } else {
                // `\\`, `\/`, `\+`, ...: DN-level escapes, left for the DN parser
                out.extend_from_slice(&[b'\\', next]);
            }
            i += 2;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "escaped bytes in the DN are not valid UTF-8".into())
}

/// Quote a DN for a grid-mapfile line: `"` escaped, control characters as `\xHH`. The DN's
/// own escapes (`\\`, `\/`, ...) are kept, except that a DN-level `\` before a control
/// character is written `\x5c` (in `\\x0d` the file level would read `\\` as one escape).
pub fn quote_dn(dn: &DistinguishedName) -> String {
    fn hex(c: char, out: &mut String) {
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    let mut out = String::from("\"");
    let slash = dn.to_slash();
    let mut chars = slash.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            // a DN-level escape: keep the pair together
            '\\' => match chars.next() {
                Some('"') => out.push_str("\\\""),
                Some(n) if n.is_control() => {
                    out.push_str("\\x5c");
                    hex(n, &mut out);
                }
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            c if c.is_control() => hex(c, &mut out),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Format a whole mapping line.
pub fn format_line(dn: &DistinguishedName, accounts: &[MappedAccount]) -> String {
    let list: Vec<String> = accounts.iter().map(ToString::to_string).collect();
    format!("{} {}", quote_dn(dn), list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).unwrap()
    }

    #[test]
    fn parses_the_classic_syntax() {
        let text = r#"
# site grid-mapfile
"/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251" jsmith
"/O=Grid/CN=Jane Doe"   jane , jdoe2,.atlas   # trailing comment
/O=Grid/CN=nospace alice
"/O=Grid/CN=Quote \"Q\" \\ x" quoted
"/O=Grid/CN=J\xc3\xbcrgen" juergen
"#;
        let map = GridMapfile::parse(text).unwrap();
        assert_eq!(map.len(), 5);
        let e = map.lookup(&dn("/O=Grid/CN=Jane Doe")).unwrap();
        assert_eq!(e.line, 4);
        assert_eq!(
            e.accounts,
            vec![
                MappedAccount::Local(AccountName::parse("jane").unwrap()),
                MappedAccount::Local(AccountName::parse("jdoe2").unwrap()),
                MappedAccount::Pool(AccountName::parse("atlas").unwrap()),
            ]
        );
        assert!(map.lookup(&dn("/O=Grid/CN=nospace")).is_some());
        assert!(map.lookup(&dn(r#"/O=Grid/CN=Quote "Q" \\ x"#)).is_some());
        assert!(map.lookup(&dn("/O=Grid/CN=Jürgen")).is_some());
        // lookups use DN comparison rules, not string equality
        assert!(
            map.lookup(&dn("CN=John Smith A251,O=Example,C=US,DC=cilogon,DC=org"))
                .is_some()
        );
        assert!(map.lookup(&dn("/O=Grid/CN=jane doe")).is_none());
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "\"/O=Grid/CN=a\" ok\n\"/O=Grid/CN=b\n\"/O=Grid/CN=c\"\nCN=d,O=Grid x\n\"/O=Grid/CN=e\" a b\n\"/O=Grid/CN=f\" a,,b\n\"/O=Grid/CN=g\" -bad\n";
        let errors = GridMapfile::parse(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(
            errors[0].message.contains("closing quote"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[1].message.contains("no account"),
            "{}",
            errors[1].message
        );
        assert!(
            errors[2].message.contains("slash form"),
            "{}",
            errors[2].message
        );
        assert!(
            errors[3].message.contains("unexpected text"),
            "{}",
            errors[3].message
        );
        assert!(
            errors[4].message.contains("empty account"),
            "{}",
            errors[4].message
        );
        assert!(
            errors[5].message.contains("invalid account"),
            "{}",
            errors[5].message
        );
    }

    #[test]
    fn first_line_wins_and_duplicates_are_kept_for_lint() {
        let text = "\"/O=Grid/CN=a\" first\n\"/o=Grid/cn=a\" second\n";
        let map = GridMapfile::parse(text).unwrap();
        assert_eq!(
            map.lookup(&dn("/O=Grid/CN=a")).unwrap().accounts[0].to_string(),
            "first"
        );
        assert_eq!(
            map.duplicates(),
            &[Duplicate {
                dn: dn("/O=Grid/CN=a"),
                first_line: 1,
                line: 2
            }]
        );
    }

    #[test]
    fn format_line_round_trips() {
        let d = dn(r#"/O=Grid/CN=Q "x" \ y/OU=z"#);
        let accounts = vec![
            MappedAccount::parse("a").unwrap(),
            MappedAccount::parse(".pool").unwrap(),
        ];
        let line = format_line(&d, &accounts);
        assert_eq!(
            parse_line(&line).unwrap(),
            ParsedLine::Mapping { dn: d, accounts }
        );
    }

    #[test]
    fn format_line_round_trips_escaped_trailing_white_space() {
        let accounts = vec![MappedAccount::parse("a").unwrap()];
        for rfc in [
            "CN=a\\ ,O=Grid",
            "CN=a\r,O=Grid",
            "CN=a\t,O=Grid",
            "C=\r",
            "CN=a\\\\\r,O=Grid",
            "CN=a\r\\\\,O=Grid",
            "CN=x\\\\\u{85}y\n,O=\"q\"\\\\",
        ] {
            let d = dn(rfc);
            let line = format_line(&d, &accounts);
            assert!(!line.contains(['\r', '\n', '\t']), "{line:?}");
            assert_eq!(
                parse_line(&line).unwrap(),
                ParsedLine::Mapping {
                    dn: d,
                    accounts: accounts.clone()
                },
                "{rfc:?} via {line:?}"
            );
        }
        // a quoted DN's unescaped trailing space is still not part of it
        assert_eq!(
            parse_line("\"/O=Grid/CN=a \" a").unwrap(),
            ParsedLine::Mapping {
                dn: dn("/O=Grid/CN=a"),
                accounts
            }
        );
    }

    #[test]
    fn account_names() {
        assert!(AccountName::parse("alice").is_ok());
        assert!(AccountName::parse("svc_user-1.x").is_ok());
        assert!(AccountName::parse("machine$").is_ok());
        assert!(AccountName::parse("-x").is_err());
        assert!(AccountName::parse("123").is_err());
        assert!(AccountName::parse("a/b").is_err());
        assert!(AccountName::parse(&"a".repeat(33)).is_err());
    }
}
