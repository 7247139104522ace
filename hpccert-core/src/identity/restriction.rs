//! Restrictions per identity (`[mapping] restrictions_file`): where an identity may log in
//! from, a command it is held to, and what its sessions may not do, as OpenSSH's
//! `authorized_keys` options (`from=`, `command=`, `no-pty`, `restrict`) do for a key.
//!
//! One rule a line, the subject first, then options separated by white space:
//!
//! ```text
//! # subject                                          options
//! dn "/DC=org/DC=example/O=Gateway/CN=Robot"          from=192.0.2.0/24,2001:db8::/48 max-sessions=4
//! token "https://cilogon.org" "http://cilogon.org/serverA/users/12345"  command="/usr/local/bin/submit" no-pty
//! issuer "https://robots.example.org"                 from=198.51.100.7/32
//! account gwuser                                      no-pty no-forwarding
//! ```
//!
//! * subjects: `dn` (a quoted DN, compared as the grid-mapfile compares DNs), `token` (quoted
//!   issuer and subject, exact), `issuer` (every token of that issuer), `account` (every login
//!   to that account, whatever the credential);
//! * options: `from=CIDR[,CIDR...]` (IPv4/IPv6 networks; a bare address is one host),
//!   `command="..."` (the session runs it instead of the client's command, which it finds in
//!   `SSH_ORIGINAL_COMMAND`), `no-pty`, `no-forwarding`, `max-sessions=N` (concurrent sessions
//!   of the identity);
//! * every rule that matches a login applies: each `from` must admit the address, the
//!   smallest `max-sessions` counts, `no-pty`/`no-forwarding` from any rule hold; two rules
//!   forcing different commands refuse the login (the file is ambiguous).
//!
//! A separate file rather than options in the grid-mapfile: Globus's and LCMAPS's grid-mapfile
//! parsers read every word after the DN as an account name, so an option there would become a
//! bogus account on any host that shares the file.
//!
//! A missing file restricts nobody. A file that cannot be read or has a bad line is an error,
//! and the engine then refuses every login (as for the suspension list).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::identity::Identity;
use crate::identity::dn::DistinguishedName;
use crate::identity::gridmap::{
    AccountName, LineError, LineFileError, load_line_file, parse_lines,
};
use crate::identity::tokenmap::take_quoted;

/// Where the file lives by default.
pub const DEFAULT_PATH: &str = "/etc/hpccert/restrictions";

pub type RestrictionError = LineFileError;

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Dn(DistinguishedName),
    Token { issuer: String, subject: String },
    Issuer(String),
    Account(AccountName),
}

/// What a rule asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub from: Option<Vec<IpNet>>,
    pub command: Option<String>,
    pub no_pty: bool,
    pub no_forwarding: bool,
    pub max_sessions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub subject: Subject,
    pub options: Options,
}

/// What applies to one login: the rules' options merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Each matching rule's networks (the address must be in every one), with its place.
    pub from: Vec<(String, Vec<IpNet>)>,
    pub command: Option<String>,
    pub no_pty: bool,
    pub no_forwarding: bool,
    pub max_sessions: Option<u32>,
    /// Where each applied rule is (`FILE:LINE`).
    pub rules: Vec<String>,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule whose networks do not admit `addr`, with its networks.
    pub fn refuses(&self, addr: IpAddr) -> Option<(&str, &[IpNet])> {
        let addr = canonical(addr);
        self.from
            .iter()
            .find(|(_, nets)| !nets.iter().any(|n| n.contains(&addr)))
            .map(|(at, nets)| (at.as_str(), nets.as_slice()))
    }

    /// The options in words (for `explain` and the audit log).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (_, nets) in &self.from {
            parts.push(format!(
                "from={}",
                nets.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if let Some(c) = &self.command {
            parts.push(format!("command={c:?}"));
        }
        if self.no_pty {
            parts.push("no-pty".into());
        }
        if self.no_forwarding {
            parts.push("no-forwarding".into());
        }
        if let Some(n) = self.max_sessions {
            parts.push(format!("max-sessions={n}"));
        }
        parts.join(" ")
    }
}

/// Where a login comes from, for `from=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address.
    Known(IpAddr),
    /// Not known and not needed: `explain` without `--from` (the rules are reported).
    NotChecked,
    /// A login whose address is not known (a PAM application that set no `PAM_RHOST`, or a
    /// host name there): a `from=` rule refuses it.
    Unknown,
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("from: {s:?} is not an address or network (CIDR)"))
}

/// The subject a list line starts with, after its first word `kind` (one of `kinds`):
/// `dn "DN"`, `token "ISSUER" "SUBJECT"`, `issuer "ISSUER"` or `account NAME`; and the rest of
/// the line. `None` when `kind` is not one of `kinds`. Shared by the restrictions and the
/// suspension list.
pub(crate) fn take_subject<'a>(
    kind: &str,
    rest: &'a str,
    kinds: &[&str],
) -> Result<Option<(Subject, &'a str)>, String> {
    if !kinds.contains(&kind) {
        return Ok(None);
    }
    Ok(Some(match kind {
        "dn" => {
            let (dn, rest) = take_quoted(rest).map_err(|e| format!("dn: {e}"))?;
            let dn = DistinguishedName::parse(&dn).map_err(|e| format!("dn: {e}"))?;
            (Subject::Dn(dn), rest)
        }
        "token" => {
            let (issuer, rest) = take_quoted(rest).map_err(|e| format!("token issuer: {e}"))?;
            let (subject, rest) =
                take_quoted(rest.trim_start()).map_err(|e| format!("token subject: {e}"))?;
            if issuer.is_empty() || subject.is_empty() {
                return Err("token: empty issuer or subject".into());
            }
            (Subject::Token { issuer, subject }, rest)
        }
        "issuer" => {
            let (issuer, rest) = take_quoted(rest).map_err(|e| format!("issuer: {e}"))?;
            if issuer.is_empty() {
                return Err("issuer: empty".into());
            }
            (Subject::Issuer(issuer), rest)
        }
        "account" => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let account = AccountName::parse(&rest[..end]).map_err(|e| format!("account: {e}"))?;
            (Subject::Account(account), &rest[end..])
        }
        _ => return Ok(None),
    }))
}

/// A rule's line: `None` for blank and comment lines.
pub fn parse_line(raw: &str) -> Result<Option<(Subject, Options)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let Some((subject, mut rest)) =
        take_subject(kind, rest, &["dn", "token", "issuer", "account"])?
    else {
        return Err(format!(
            "unknown subject {kind:?} (expected dn, token, issuer or account)"
        ));
    };
    let mut options = Options::default();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            break;
        }
        if let Some(after) = rest.strip_prefix("command=") {
            let (command, after) = take_quoted(after).map_err(|e| format!("command: {e}"))?;
            if command.trim().is_empty() {
                return Err("command: empty".into());
            }
            if options.command.replace(command).is_some() {
                return Err("command= given twice".into());
            }
            rest = after;
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        match word.split_once('=') {
            Some(("from", list)) => {
                let nets = list
                    .split(',')
                    .map(parse_net)
                    .collect::<Result<Vec<_>, _>>()?;
                if options.from.replace(nets).is_some() {
                    return Err("from= given twice".into());
                }
            }
            Some(("max-sessions", n)) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("max-sessions: {n:?} is not a count"))?;
                options.max_sessions = Some(n);
            }
            None if word == "no-pty" => options.no_pty = true,
            None if word == "no-forwarding" => options.no_forwarding = true,
            _ => {
                return Err(format!(
                    "unknown option {word:?} (from=, command=, no-pty, no-forwarding, max-sessions=)"
                ));
            }
        }
    }
    if options == Options::default() {
        return Err("no option: a rule restricts something".into());
    }
    Ok(Some((subject, options)))
}

/// A parsed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    path: Option<PathBuf>,
    rules: Vec<Rule>,
}

impl Restrictions {
    /// Read the file at `path`; a missing file restricts nobody.
    pub fn load(path: &Path) -> Result<Self, RestrictionError> {
        let mut r = load_line_file(path, Self::parse)?;
        r.path = Some(path.to_path_buf());
        Ok(r)
    }

    /// Parse text; every bad line is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let rules = parse_lines(text, parse_line)?
            .into_iter()
            .map(|(line, (subject, options))| Rule {
                line,
                subject,
                options,
            })
            .collect();
        Ok(Self { path: None, rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What applies to a login of `identity` to `account`; an error when two rules force
    /// different commands.
    pub fn applied(&self, identity: &Identity, account: &AccountName) -> Result<Applied, String> {
        let mut out = Applied::default();
        for rule in &self.rules {
            let matches = match (&rule.subject, identity) {
                (Subject::Dn(d), Identity::Certificate(dn)) => d == dn,
                (
                    Subject::Token { issuer, subject },
                    Identity::Token {
                        issuer: i,
                        subject: s,
                    },
                ) => issuer == i && subject == s,
                (Subject::Issuer(issuer), Identity::Token { issuer: i, .. }) => issuer == i,
                (Subject::Account(a), _) => a == account,
                _ => false,
            };
            if !matches {
                continue;
            }
            let at = match &self.path {
                Some(p) => format!("{}:{}", p.display(), rule.line),
                None => format!("line {}", rule.line),
            };
            let o = &rule.options;
            if let Some(nets) = &o.from {
                out.from.push((at.clone(), nets.clone()));
            }
            if let Some(c) = &o.command {
                match &out.command {
                    Some(other) if other != c => {
                        return Err(format!(
                            "two rules force different commands ({at} and an earlier one): refused until the restrictions file says one"
                        ));
                    }
                    _ => out.command = Some(c.clone()),
                }
            }
            out.no_pty |= o.no_pty;
            out.no_forwarding |= o.no_forwarding;
            if let Some(n) = o.max_sessions {
                out.max_sessions = Some(out.max_sessions.map_or(n, |m| m.min(n)));
            }
            out.rules.push(at);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
# gateways
dn "/DC=org/DC=example/O=Gateway/CN=Robot"  from=192.0.2.0/24,2001:db8::/48 max-sessions=4
token "https://iss.example" "sub-1"  command="/usr/local/bin/submit --queue \"gw\"" no-pty
issuer "https://iss.example"  from=198.51.100.7 max-sessions=2  # the robots' host
account gwuser no-forwarding
"#;

    fn dn(s: &str) -> Identity {
        Identity::Certificate(DistinguishedName::parse(s).unwrap())
    }
    fn account(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    #[test]
    fn rules_apply_by_identity_issuer_and_account() {
        let r = Restrictions::parse(FILE).unwrap();
        assert_eq!(r.rules().len(), 4);
        let robot = r
            .applied(&dn("/DC=org/DC=example/O=Gateway/CN=Robot"), &account("gw"))
            .unwrap();
        assert_eq!(robot.max_sessions, Some(4));
        assert!(robot.refuses("192.0.2.77".parse().unwrap()).is_none());
        assert!(
            robot
                .refuses("::ffff:192.0.2.77".parse().unwrap())
                .is_none(),
            "v4-mapped"
        );
        assert!(robot.refuses("2001:db8::1".parse().unwrap()).is_none());
        let (at, _) = robot.refuses("127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(at, "line 3");
        let token = Identity::Token {
            issuer: "https://iss.example".into(),
            subject: "sub-1".into(),
        };
        let t = r.applied(&token, &account("gwuser")).unwrap();
        assert_eq!(
            t.command.as_deref(),
            Some("/usr/local/bin/submit --queue \"gw\"")
        );
        assert!(t.no_pty && t.no_forwarding);
        assert_eq!(
            t.max_sessions,
            Some(2),
            "the issuer's rule too, the smaller limit"
        );
        assert!(t.refuses("198.51.100.7".parse().unwrap()).is_none());
        assert!(t.refuses("198.51.100.8".parse().unwrap()).is_some());
        assert_eq!(t.rules.len(), 3);
        assert!(
            r.applied(&dn("/O=Other/CN=x"), &account("other"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_lines_are_named_and_conflicts_refuse() {
        let e = Restrictions::parse(
            "dn \"/O=x/CN=y\" from=300.1.2.3\naccount a\nhost x no-pty\naccount b bogus\naccount c command=\"\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5]);
        assert!(e[0].message.contains("300.1.2.3"), "{}", e[0].message);
        assert!(e[1].message.contains("no option"), "{}", e[1].message);
        let r = Restrictions::parse("account a command=\"one\"\nissuer \"i\" command=\"two\"\n")
            .unwrap();
        let token = Identity::Token {
            issuer: "i".into(),
            subject: "s".into(),
        };
        assert!(r.applied(&token, &account("a")).is_err());
    }
}
