//! The token map: token identities `(iss, sub)` to local accounts.
//!
//! One rule a line:
//!
//! ```text
//! # issuer                         subject                                   accounts
//! "https://cilogon.org"            "http://cilogon.org/serverA/users/12345"  jsmith
//! "https://wlcg.example.org/"      /[0-9a-f-]{36}/                           cmsprod,cmsuser
//! ```
//!
//! * the issuer is a quoted string compared exactly (no trailing-slash normalisation: `iss`
//!   is compared as the token states it);
//! * the subject is a quoted literal, or a `/regex/` matched against the **whole** subject
//!   (it is anchored: `/abc/` matches only `abc`); `\/` stands for a slash inside it;
//! * in quoted strings `\"`, `\\` and `\xHH` (a byte; the bytes must form UTF-8) are escapes,
//!   as in the grid-mapfile;
//! * accounts as in the grid-mapfile: comma-separated, white space around commas allowed,
//!   the first is the default; `.atlas` names a pool (an account leased at login);
//! * `#` comment lines, blank lines, and `#` comments after white space at the end of a line.
//!
//! **Which rule wins**: a line with a literal subject wins over regex lines (lookup O(1));
//! otherwise the first regex line of that issuer, in file order, that matches. A literal
//! `(iss, sub)` on several lines: the first counts and the others are listed in
//! [`TokenMapfile::duplicates`] (the grid-mapfile policy).
//!
//! [`import_condor`] converts HTCondor `SCITOKENS` mapfile lines to this format.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::identity::gridmap::{AccountName, LineError, MappedAccount};

/// Longest compiled regex accepted (bytes of the compiled program): a bound on the work
/// one rule can cost.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// How a rule matches the subject.
#[derive(Debug, Clone)]
pub enum SubjectMatch {
    Literal(String),
    /// The pattern as written (without slashes) and its anchored compiled form.
    Regex {
        pattern: String,
        compiled: regex::Regex,
    },
}

impl PartialEq for SubjectMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Literal(a), Self::Literal(b)) => a == b,
            (Self::Regex { pattern: a, .. }, Self::Regex { pattern: b, .. }) => a == b,
            _ => false,
        }
    }
}
impl Eq for SubjectMatch {}

impl fmt::Display for SubjectMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(s) => f.write_str(&quote(s)),
            Self::Regex { pattern, .. } => write!(f, "/{}/", pattern.replace('/', "\\/")),
        }
    }
}

/// One rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMapRule {
    /// 1-based line number.
    pub line: usize,
    pub issuer: String,
    pub subject: SubjectMatch,
    /// Never empty; the first is the default. Local accounts, or pools (`.atlas`: an account
    /// leased at login, as in the grid-mapfile).
    pub accounts: Vec<MappedAccount>,
}

impl fmt::Display for TokenMapRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accounts: Vec<String> = self.accounts.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{} {} {}",
            quote(&self.issuer),
            self.subject,
            accounts.join(",")
        )
    }
}

/// A parsed token map.
#[derive(Debug, Clone, Default)]
pub struct TokenMapfile {
    rules: Vec<TokenMapRule>,
    /// (issuer, literal subject) -> index in `rules`
    literal: HashMap<(String, String), usize>,
    /// issuer -> indexes of its regex rules, in file order
    regex: HashMap<String, Vec<usize>>,
    duplicates: Vec<(usize, usize)>,
}

impl TokenMapfile {
    /// Read and parse a file; errors carry the path and line.
    pub fn load(path: &Path) -> Result<Self, Vec<LineError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![LineError {
                path: Some(path.to_path_buf()),
                line: 0,
                message: e.to_string(),
            }]
        })?;
        Self::parse(&text).map_err(|errs| {
            errs.into_iter()
                .map(|e| LineError {
                    path: Some(path.to_path_buf()),
                    ..e
                })
                .collect()
        })
    }

    /// Parse the whole text, or every bad line.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let mut map = TokenMapfile::default();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            match parse_rule(raw) {
                Ok(None) => {}
                Ok(Some((issuer, subject, accounts))) => {
                    let idx = map.rules.len();
                    match &subject {
                        SubjectMatch::Literal(s) => {
                            let key = (issuer.clone(), s.clone());
                            if let Some(first) = map.literal.get(&key) {
                                map.duplicates.push((map.rules[*first].line, line));
                                continue;
                            }
                            map.literal.insert(key, idx);
                        }
                        SubjectMatch::Regex { .. } => {
                            map.regex.entry(issuer.clone()).or_default().push(idx)
                        }
                    }
                    map.rules.push(TokenMapRule {
                        line,
                        issuer,
                        subject,
                        accounts,
                    });
                }
                Err(message) => errors.push(LineError {
                    path: None,
                    line,
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(map)
        } else {
            Err(errors)
        }
    }

    /// The rule that maps `(issuer, subject)`, if any.
    pub fn lookup(&self, issuer: &str, subject: &str) -> Option<&TokenMapRule> {
        if let Some(i) = self.literal.get(&(issuer.to_string(), subject.to_string())) {
            return self.rules.get(*i);
        }
        self.regex
            .get(issuer)?
            .iter()
            .filter_map(|i| self.rules.get(*i))
            .find(|r| match &r.subject {
                SubjectMatch::Regex { compiled, .. } => compiled.is_match(subject),
                SubjectMatch::Literal(_) => false,
            })
    }

    pub fn rules(&self) -> &[TokenMapRule] {
        &self.rules
    }

    /// `(first line, later line)` for each literal rule given more than once.
    pub fn duplicates(&self) -> &[(usize, usize)] {
        &self.duplicates
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Quote a string for a token map line.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Read a quoted string at the start of `s`: its value and the rest after the closing quote.
pub(crate) fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("expected a quoted string")?;
    let mut out: Vec<u8> = Vec::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = String::from_utf8(out)
                    .map_err(|_| "escaped bytes are not valid UTF-8".to_string())?;
                return Ok((value, &body[i + 1..]));
            }
            b'\\' => match bytes.get(i + 1) {
                Some(b'"') => {
                    out.push(b'"');
                    i += 2;
                }
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x')
                    if bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                        && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                {
                    let v =
                        u8::from_str_radix(&body[i + 2..i + 4], 16).map_err(|e| e.to_string())?;
                    out.push(v);
                    i += 4;
                }
                Some(_) => {
                    return Err(format!(
                        "unknown escape {:?} (use \\\", \\\\ or \\xHH)",
                        // the backslash and the character after it, whatever its width (fuzz find)
                        body[i..].chars().take(2).collect::<String>()
                    ));
                }
                None => return Err("dangling backslash".into()),
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err("missing closing quote".into())
}

/// Read a `/regex/` at the start of `s`: the pattern (with `\/` turned into `/`) and the rest.
fn take_regex(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('/').ok_or("expected /regex/")?;
    let mut pattern = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => pattern.push('/'),
                Some((_, n)) => {
                    pattern.push('\\');
                    pattern.push(n);
                }
                None => return Err("dangling backslash in the regex".into()),
            },
            '/' => return Ok((pattern, &body[i + 1..])),
            c => pattern.push(c),
        }
    }
    Err("missing closing / after the regex".into())
}

/// Compile a subject regex anchored on the whole subject.
pub fn compile_subject_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() {
        return Err("empty regex (write /.*/ to match any subject)".into());
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad regex /{pattern}/: {e}"))
}

fn need_space(rest: &str, after: &str) -> Result<(), String> {
    if rest.starts_with(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!("expected white space after the {after}"))
    }
}

type ParsedRule = (String, SubjectMatch, Vec<MappedAccount>);

/// Parse one line: None for blank and comment lines.
fn parse_rule(raw: &str) -> Result<Option<ParsedRule>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (issuer, rest) = take_quoted(line).map_err(|e| format!("issuer: {e}"))?;
    if issuer.is_empty() {
        return Err("issuer: empty".into());
    }
    need_space(rest, "issuer")?;
    let rest = rest.trim_start();
    let (subject, rest) = if rest.starts_with('"') {
        let (s, rest) = take_quoted(rest).map_err(|e| format!("subject: {e}"))?;
        if s.is_empty() {
            return Err("subject: empty".into());
        }
        (SubjectMatch::Literal(s), rest)
    } else if rest.starts_with('/') {
        let (pattern, rest) = take_regex(rest).map_err(|e| format!("subject: {e}"))?;
        let compiled = compile_subject_regex(&pattern).map_err(|e| format!("subject: {e}"))?;
        (SubjectMatch::Regex { pattern, compiled }, rest)
    } else {
        return Err("subject: expected a quoted subject or a /regex/".into());
    };
    need_space(rest, "subject")?;
    let mut list = rest.trim();
    if let Some(hash) = list.find(" #").or_else(|| list.find("\t#")) {
        list = list[..hash].trim_end();
    }
    if list.is_empty() {
        return Err("no account after the subject".into());
    }
    let mut accounts = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        if part.contains(char::is_whitespace) {
            return Err(format!("unexpected text after the accounts: {part:?}"));
        }
        let account = MappedAccount::parse(part)?;
        if accounts.contains(&account) {
            return Err(format!("account {account} listed twice"));
        }
        accounts.push(account);
    }
    Ok(Some((issuer, subject, accounts)))
}

/// The result of converting an HTCondor mapfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondorImport {
    /// Token map lines, one per converted rule.
    pub lines: Vec<String>,
    /// Notes on converted lines (line number, text): where the conversion narrowed a rule.
    pub notes: Vec<(usize, String)>,
    /// Lines that could not be converted (line number, reason).
    pub refused: Vec<(usize, String)>,
}

/// Convert HTCondor `SCITOKENS` mapfile lines (`SCITOKENS /regex/ account` or
/// `SCITOKENS "issuer,subject" account`) to token map lines.
///
/// HTCondor matches the principal `issuer,subject` with an unanchored regex. A regex
/// converts when it starts with `^` and names the issuer literally up to the first comma
/// (the token map compares issuers exactly); the rest becomes the subject regex (anchored at
/// the end only if the HTCondor regex was). An unescaped `.` in the issuer is taken as a
/// literal dot, which narrows the rule (noted). Lines of other methods (`GSI`, `CLAIMTOBE`,
/// ...) are not token rules and are listed as refused; so are substitutions (`\1`).
pub fn import_condor(text: &str) -> CondorImport {
    let mut out = CondorImport::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match condor_line(line) {
            Ok((rule, notes)) => {
                out.lines.push(rule);
                out.notes.extend(notes.into_iter().map(|note| (n, note)));
            }
            Err(reason) => out.refused.push((n, reason)),
        }
    }
    out
}

fn condor_line(line: &str) -> Result<(String, Vec<String>), String> {
    let (method, rest) = line
        .split_once(char::is_whitespace)
        .ok_or("a mapfile line has three fields")?;
    if method != "SCITOKENS" {
        return Err(format!("method {method} is not SCITOKENS"));
    }
    let rest = rest.trim_start();
    let mut notes = Vec::new();
    let (issuer, subject, rest) = if rest.starts_with('"') {
        let (principal, rest) = take_quoted(rest)?;
        let (iss, sub) = principal
            .split_once(',')
            .ok_or("principal has no \"issuer,subject\" comma")?;
        (iss.to_string(), SubjectText::Literal(sub.to_string()), rest)
    } else if rest.starts_with('/') {
        let (pattern, rest) = take_regex(rest)?;
        let (iss, sub) = split_condor_regex(&pattern, &mut notes)?;
        (iss, SubjectText::Regex(sub), rest)
    } else {
        let (principal, rest) = rest.split_once(char::is_whitespace).ok_or("no account")?;
        let (iss, sub) = principal
            .split_once(',')
            .ok_or("principal has no \"issuer,subject\" comma")?;
        (iss.to_string(), SubjectText::Literal(sub.to_string()), rest)
    };
    let account = rest.trim();
    if account.contains('\\') || account.contains('$') {
        return Err(format!(
            "account {account:?} uses a regex substitution: map each subject explicitly"
        ));
    }
    let account = AccountName::parse(account)?;
    if issuer.is_empty() {
        return Err("empty issuer".into());
    }
    let subject = match subject {
        SubjectText::Literal(s) if !s.is_empty() => quote(&s),
        SubjectText::Literal(_) => return Err("empty subject".into()),
        SubjectText::Regex(r) => {
            compile_subject_regex(&r)?;
            format!("/{}/", r.replace('/', "\\/"))
        }
    };
    Ok((format!("{} {} {}", quote(&issuer), subject, account), notes))
}

enum SubjectText {
    Literal(String),
    Regex(String),
}

/// Split an HTCondor principal regex into a literal issuer and a subject regex.
fn split_condor_regex(pattern: &str, notes: &mut Vec<String>) -> Result<(String, String), String> {
    let body = pattern
        .strip_prefix('^')
        .ok_or("the regex is not anchored with ^: the issuer would not be exact")?;
    let mut issuer = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, n)) if n.is_ascii_punctuation() => issuer.push(n),
                Some((_, n)) => {
                    return Err(format!(
                        "\\{n} in the issuer part is not a literal character"
                    ));
                }
                None => return Err("dangling backslash".into()),
            },
            ',' => {
                let rest = &body[i + 1..];
                let subject = match rest.strip_suffix('$') {
                    Some(anchored) if !anchored.ends_with('\\') => anchored.to_string(),
                    _ => format!("{rest}.*"),
                };
                let subject = if subject.is_empty() {
                    ".*".to_string()
                } else {
                    subject
                };
                return Ok((issuer, subject));
            }
            '.' => {
                let note = "an unescaped . in the issuer is taken as a literal dot";
                if !notes.iter().any(|n| n == note) {
                    notes.push(note.into());
                }
                issuer.push('.');
            }
            '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => {
                return Err(format!(
                    "the issuer part uses the regex operator {c:?}: the issuer would not be exact"
                ));
            }
            c => issuer.push(c),
        }
    }
    Err("no comma between issuer and subject in the regex".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"# token map
"https://cilogon.org" "http://cilogon.org/serverA/users/12345" jsmith, jsmith2
"https://wlcg.example.org/" /[0-9a-f]{8}/ cmsprod   # robots
"https://wlcg.example.org/" /.*/ cmsuser
"https://cilogon.org" "http://cilogon.org/serverA/users/12345" other
"https://q.example" "a\"b\\c\x41" q
"#;

    #[test]
    fn parses_literal_and_regex_rules() {
        let m = TokenMapfile::parse(MAP).unwrap();
        assert_eq!(m.len(), 4);
        let r = m
            .lookup(
                "https://cilogon.org",
                "http://cilogon.org/serverA/users/12345",
            )
            .unwrap();
        assert_eq!(r.line, 2);
        assert_eq!(
            r.accounts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["jsmith", "jsmith2"]
        );
        assert_eq!(m.duplicates(), &[(2, 5)]);
        // the regex is anchored on the whole subject; first matching regex wins
        assert_eq!(
            m.lookup("https://wlcg.example.org/", "deadbeef")
                .unwrap()
                .line,
            3
        );
        assert_eq!(
            m.lookup("https://wlcg.example.org/", "deadbeef0")
                .unwrap()
                .line,
            4
        );
        // issuers are exact: no trailing-slash normalisation
        assert!(m.lookup("https://wlcg.example.org", "deadbeef").is_none());
        assert!(
            m.lookup(
                "https://cilogon.org/",
                "http://cilogon.org/serverA/users/12345"
            )
            .is_none()
        );
        assert_eq!(
            m.lookup("https://q.example", "a\"b\\cA").unwrap().accounts[0].to_string(),
            "q"
        );
    }

    #[test]
    fn every_bad_line_is_numbered() {
        let errs = TokenMapfile::parse(
            "\"i\" \"s\" ok\n\"i\" s bad\n\"i\" /(/ bad\n\"i\" \"s\"\n\"i\" \"s2\" .\n\"i\" \"s3\" root x\n\"\" \"s\" a\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7], "{errs:?}");
        assert!(errs[1].message.contains("bad regex"), "{}", errs[1].message);
    }

    #[test]
    fn pools_are_targets_as_in_the_grid_mapfile() {
        let m = TokenMapfile::parse("\"https://i\" \"s\" .atlas,alice\n").unwrap();
        let rule = m.lookup("https://i", "s").unwrap();
        assert_eq!(
            rule.accounts,
            [
                MappedAccount::Pool(AccountName::parse("atlas").unwrap()),
                MappedAccount::Local(AccountName::parse("alice").unwrap())
            ]
        );
        assert_eq!(rule.to_string(), "\"https://i\" \"s\" .atlas,alice");
    }

    #[test]
    fn a_multibyte_character_after_a_backslash_is_an_error_not_a_panic() {
        // fuzz find: `"\ѣ` sliced inside the character while naming the bad escape
        let errs = TokenMapfile::parse("\"\\ѣ").unwrap_err();
        assert!(
            errs[0].message.contains("unknown escape \"\\\\ѣ\""),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn rules_print_back_as_they_parse() {
        let m = TokenMapfile::parse(MAP).unwrap();
        let again: String = m.rules().iter().map(|r| format!("{r}\n")).collect();
        let m2 = TokenMapfile::parse(&again).unwrap();
        let strip = |m: &TokenMapfile| -> Vec<(String, SubjectMatch, Vec<MappedAccount>)> {
            m.rules()
                .iter()
                .map(|r| (r.issuer.clone(), r.subject.clone(), r.accounts.clone()))
                .collect()
        };
        assert_eq!(strip(&m), strip(&m2));
    }

    #[test]
    fn imports_htcondor_scitokens_lines() {
        let text = r#"
SCITOKENS /^https:\/\/scitokens\.org\/osg-connect,/ osg
SCITOKENS /^https:\/\/cms-auth.web.cern.ch\/,bad55f4e-602c-4e8d-a5c5-bd8ffb762113$/ cmsprod
SCITOKENS "https://demo.scitokens.org,alice" alice
SCITOKENS /https:\/\/x,.*/ x
SCITOKENS /^https:\/\/x.*,y/ x
SCITOKENS /^https:\/\/x,(.*)/ \1
GSI "/DC=org/CN=x" x
"#;
        let r = import_condor(text);
        assert_eq!(
            r.lines,
            [
                r#""https://scitokens.org/osg-connect" /.*/ osg"#,
                r#""https://cms-auth.web.cern.ch/" /bad55f4e-602c-4e8d-a5c5-bd8ffb762113/ cmsprod"#,
                r#""https://demo.scitokens.org" "alice" alice"#,
            ]
        );
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.notes[0].0, 3);
        let refused: Vec<usize> = r.refused.iter().map(|(n, _)| *n).collect();
        assert_eq!(refused, [5, 6, 7, 8], "{:?}", r.refused);
        let m = TokenMapfile::parse(&r.lines.join("\n")).unwrap();
        assert_eq!(
            m.lookup("https://scitokens.org/osg-connect", "anything")
                .unwrap()
                .accounts[0]
                .to_string(),
            "osg"
        );
        assert!(
            m.lookup(
                "https://cms-auth.web.cern.ch/",
                "bad55f4e-602c-4e8d-a5c5-bd8ffb762113x"
            )
            .is_none()
        );
    }
}
