//! What a session may do, from the token's capabilities (SciTokens and WLCG scopes):
//! commands (exec and shell) need `compute.create` or `compute.modify`; file access over sftp
//! is limited to the `storage.*` paths (`storage.read:PATH` reads below PATH,
//! `storage.modify:PATH` and `storage.create:PATH` (WLCG), `write:PATH` (SciTokens) read and
//! write below it). A certificate login, an OpenSSH certificate, a token without any of these
//! scopes (an OIDC-profile token), or an issuer configured with `session_rights = "all"` may do
//! everything, as before.

use std::fmt;
use std::path::PathBuf;

use crate::config::{Config, SessionRightsRule};
use crate::identity::Identity;
use crate::identity::mapping::Decision;
use crate::token::Capability;

/// File access over sftp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// Everything the account may reach.
    All,
    /// Only below these paths (absolute, normalised): `read` read-only, `write` read-write.
    Below {
        read: Vec<PathBuf>,
        write: Vec<PathBuf>,
    },
    /// None at all.
    Nothing,
}

/// What the session may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRights {
    pub commands: bool,
    pub files: Files,
    /// The scopes they came from (for messages), empty when unrestricted.
    pub from_scopes: Vec<String>,
}

impl SessionRights {
    pub fn all() -> Self {
        Self {
            commands: true,
            files: Files::All,
            from_scopes: Vec::new(),
        }
    }

    /// The rights of a decision; `scopes_rule` is false for an issuer whose tokens may do
    /// everything (`session_rights = "all"`).
    pub fn of(decision: &Decision, scopes_rule: bool) -> Self {
        if !scopes_rule || !matches!(decision.identity(), Identity::Token { .. }) {
            return Self::all();
        }
        let caps = decision.capabilities();
        let relevant = caps.iter().any(|c| !matches!(c, Capability::Other(_)));
        if !relevant {
            return Self::all();
        }
        let commands = caps
            .iter()
            .any(|c| matches!(c, Capability::ComputeCreate | Capability::ComputeModify));
        let mut read = Vec::new();
        let mut write = Vec::new();
        for c in caps {
            match c {
                Capability::StorageRead(p) | Capability::StorageStage(p) => read.push(normal(p)),
                Capability::StorageModify(p) | Capability::StorageCreate(p) => {
                    write.push(normal(p));
                }
                _ => {}
            }
        }
        let files = if read.is_empty() && write.is_empty() {
            Files::Nothing
        } else {
            read.retain(|r| !write.iter().any(|w| r.starts_with(w)));
            Files::Below { read, write }
        };
        Self {
            commands,
            files,
            from_scopes: caps
                .iter()
                .filter(|c| !matches!(c, Capability::Other(_)))
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// The rights of a decision under `config`: from the token's scopes, unless its issuer
    /// says `session_rights = "all"` (an issuer no longer configured counts as scopes).
    pub fn under(decision: &Decision, config: &Config) -> Self {
        let by_scopes = match decision.identity() {
            Identity::Token { issuer, .. } => config
                .issuers
                .iter()
                .find(|i| &i.issuer == issuer)
                .is_none_or(|i| i.session_rights == SessionRightsRule::Scopes),
            _ => false,
        };
        Self::of(decision, by_scopes)
    }

    /// Whether a session may run commands; why not otherwise.
    pub fn check_commands(&self) -> Result<(), String> {
        if self.commands {
            Ok(())
        } else {
            Err(format!(
                "the token allows no commands: it lacks compute.create (or compute.modify); it holds {}",
                self.from_scopes.join(" ")
            ))
        }
    }
}

/// `/a/./b/../c` as `/a/c`, relative paths below `/`; never above `/`.
fn normal(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out
}

impl fmt::Display for SessionRights {
    /// For `HPCCERT_CAPABILITIES`, explain and the audit log: `commands`, `files:all`,
    /// `read:PATH`, `write:PATH`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.commands {
            parts.push("commands".to_string());
        }
        match &self.files {
            Files::All => parts.push("files:all".into()),
            Files::Below { read, write } => {
                parts.extend(read.iter().map(|p| format!("read:{}", p.display())));
                parts.extend(write.iter().map(|p| format!("write:{}", p.display())));
            }
            Files::Nothing => {}
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_never_climb_above_the_root() {
        assert_eq!(normal("/home/a/./in/../in"), PathBuf::from("/home/a/in"));
        assert_eq!(normal("/../../etc"), PathBuf::from("/etc"));
        assert_eq!(normal("data"), PathBuf::from("/data"));
        assert_eq!(normal("/"), PathBuf::from("/"));
    }

    #[test]
    fn the_words_for_the_environment() {
        let r = SessionRights {
            commands: false,
            files: Files::Below {
                read: vec![PathBuf::from("/home/a/in")],
                write: vec![PathBuf::from("/home/a/out")],
            },
            from_scopes: vec!["storage.read:/home/a/in".into()],
        };
        assert_eq!(r.to_string(), "read:/home/a/in write:/home/a/out");
        assert_eq!(SessionRights::all().to_string(), "commands files:all");
        assert!(
            r.check_commands()
                .unwrap_err()
                .contains("storage.read:/home/a/in")
        );
    }
}
