//! The suspension list: identities and accounts that may not log in, whatever maps them.
//!
//! One entry a line ([`DEFAULT_PATH`], `[mapping] suspended_file`):
//!
//! ```text
//! # who                                              why (a comment)
//! dn "/DC=org/DC=cilogon/C=US/O=Example/CN=Jane Doe"  # ticket 4711
//! token "https://cilogon.org" "http://cilogon.org/serverA/users/12345"
//! account atlas007
//! ```
//!
//! * `dn` takes a quoted DN (slash or RFC 4514 form; compared as the grid-mapfile compares
//!   DNs); `token` a quoted issuer and a quoted subject, compared exactly; `account` a name;
//! * quoted strings take `\"`, `\\` and `\xHH` escapes, as in the token map;
//! * `#` starts a comment line, or a comment after white space at the end of an entry.
//!
//! A missing file suspends nobody. A file that cannot be read or has a bad line is an error
//! ([`SuspensionError`]), and the mapping engine then refuses every login, naming the file
//! and line: a broken list never reads as an empty one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::identity::Identity;
use crate::identity::dn::DistinguishedName;
use crate::identity::gridmap::{
    AccountName, LineError, LineFileError, load_line_file, parse_lines, quote_dn,
};
use crate::identity::restriction::{Subject, take_subject};
use crate::identity::tokenmap::quote;

/// Where the list lives by default.
pub const DEFAULT_PATH: &str = "/etc/grid-security/hpccert-suspended";

/// Why the list cannot be used.
pub type SuspensionError = LineFileError;

/// Who or what is suspended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspended {
    Dn(DistinguishedName),
    Token { issuer: String, subject: String },
    Account(AccountName),
}

impl fmt::Display for Suspended {
    /// The entry as a line of the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dn(dn) => write!(f, "dn {}", quote_dn(dn)),
            Self::Token { issuer, subject } => {
                write!(f, "token {} {}", quote(issuer), quote(subject))
            }
            Self::Account(a) => write!(f, "account {a}"),
        }
    }
}

/// One entry and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionEntry {
    pub line: usize,
    pub what: Suspended,
}

/// A parsed list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuspensionList {
    path: Option<PathBuf>,
    entries: Vec<SuspensionEntry>,
}

/// A line's content: `None` for blank and comment lines.
pub fn parse_line(raw: &str) -> Result<Option<Suspended>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let (what, rest) = match take_subject(kind, rest, &["dn", "token", "account"])? {
        Some((Subject::Dn(dn), rest)) => (Suspended::Dn(dn), rest),
        Some((Subject::Token { issuer, subject }, rest)) => {
            (Suspended::Token { issuer, subject }, rest)
        }
        Some((Subject::Account(account), rest)) => (Suspended::Account(account), rest),
        Some((Subject::Issuer(_), _)) | None => {
            return Err(format!(
                "unknown entry {kind:?} (expected dn, token or account)"
            ));
        }
    };
    let comment = rest.starts_with(char::is_whitespace) && rest.trim_start().starts_with('#');
    if !rest.trim().is_empty() && !comment {
        return Err(format!(
            "unexpected text after the entry: {:?} (a comment needs white space before its #)",
            rest.trim()
        ));
    }
    Ok(Some(what))
}

impl SuspensionList {
    /// Read the list at `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, SuspensionError> {
        let mut list = load_line_file(path, Self::parse)?;
        list.path = Some(path.to_path_buf());
        Ok(list)
    }

    /// Parse text; every bad line is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let entries = parse_lines(text, parse_line)?
            .into_iter()
            .map(|(line, what)| SuspensionEntry { line, what })
            .collect();
        Ok(Self {
            path: None,
            entries,
        })
    }

    pub fn entries(&self) -> &[SuspensionEntry] {
        &self.entries
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The entry that suspends this identity, if any.
    pub fn identity(&self, identity: &Identity) -> Option<&SuspensionEntry> {
        self.entries.iter().find(|e| match (&e.what, identity) {
            (Suspended::Dn(d), Identity::Certificate(dn)) => d == dn,
            (
                Suspended::Token { issuer, subject },
                Identity::Token {
                    issuer: i,
                    subject: s,
                },
            ) => issuer == i && subject == s,
            _ => false,
        })
    }

    /// The entry that suspends this account, if any.
    pub fn account(&self, account: &AccountName) -> Option<&SuspensionEntry> {
        self.entries
            .iter()
            .find(|e| matches!(&e.what, Suspended::Account(a) if a == account))
    }

    /// Where an entry is, for refusals: `FILE line N: ENTRY`.
    pub fn locate(&self, entry: &SuspensionEntry) -> String {
        let file = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the suspension list".into());
        format!("{file} line {}: {}", entry.line, entry.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_with_comments() {
        let l = SuspensionList::parse(
            "# suspended\n\ndn \"/DC=org/DC=cilogon/C=US/O=X/CN=Jane\"  # ticket 1\n\
             token \"https://cilogon.org\" \"http://cilogon.org/u/1\"\naccount atlas007\n",
        )
        .unwrap();
        assert_eq!(l.entries().len(), 3);
        assert_eq!(l.entries()[0].line, 3);
        let jane = DistinguishedName::parse("CN=Jane,O=X,C=US,DC=cilogon,DC=org").unwrap();
        let e = l.identity(&Identity::Certificate(jane)).unwrap();
        assert_eq!(
            l.locate(e),
            "the suspension list line 3: dn \"/DC=org/DC=cilogon/C=US/O=X/CN=Jane\""
        );
        assert!(
            l.identity(&Identity::Token {
                issuer: "https://cilogon.org".into(),
                subject: "http://cilogon.org/u/1".into()
            })
            .is_some()
        );
        assert!(
            l.identity(&Identity::Token {
                issuer: "https://cilogon.org".into(),
                subject: "http://cilogon.org/u/2".into()
            })
            .is_none()
        );
        assert_eq!(
            l.account(&AccountName::parse("atlas007").unwrap())
                .unwrap()
                .line,
            5
        );
        assert!(
            l.account(&AccountName::parse("atlas008").unwrap())
                .is_none()
        );
        // entries print back as lines that parse to themselves
        for e in l.entries() {
            assert_eq!(
                parse_line(&e.what.to_string()).unwrap(),
                Some(e.what.clone())
            );
        }
    }

    #[test]
    fn bad_lines_are_errors_with_line_numbers() {
        let errors = SuspensionList::parse(
            "account ok\nuser bob\ndn /O=x\naccount ../x\ntoken \"i\"\naccount a b\ndn \"/O=G/CN=a\"#x\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7], "{errors:?}");
        assert!(errors[0].message.contains("unknown entry \"user\""));
    }

    #[test]
    fn missing_file_is_empty_unreadable_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let l = SuspensionList::load(&dir.path().join("none")).unwrap();
        assert!(l.entries().is_empty());
        let f = dir.path().join("s");
        std::fs::write(&f, "account a\nbogus\n").unwrap();
        let e = SuspensionList::load(&f).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: line 2:", f.display())), "{e}");
        assert!(SuspensionList::load(dir.path()).is_err()); // a directory
    }
}
