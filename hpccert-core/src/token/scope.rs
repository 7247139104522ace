//! Scopes as typed capabilities (WLCG 1.0, SciTokens 1.0/2.0, plain OAuth2 scopes).
//!
//! `compute.read|modify|create|cancel`, `storage.read|create|modify|stage:/path`, and the
//! SciTokens `read:/path` (= storage.read) and `write:/path` (= storage.modify). Anything else
//! is kept as [`Capability::Other`].

use std::fmt;

/// One thing a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "String")]
pub enum Capability {
    ComputeRead,
    ComputeModify,
    ComputeCreate,
    ComputeCancel,
    StorageRead(String),
    StorageCreate(String),
    StorageModify(String),
    StorageStage(String),
    Other(String),
}

impl From<Capability> for String {
    fn from(c: Capability) -> String {
        c.to_string()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ComputeRead => f.write_str("compute.read"),
            Self::ComputeModify => f.write_str("compute.modify"),
            Self::ComputeCreate => f.write_str("compute.create"),
            Self::ComputeCancel => f.write_str("compute.cancel"),
            Self::StorageRead(p) => write!(f, "storage.read:{p}"),
            Self::StorageCreate(p) => write!(f, "storage.create:{p}"),
            Self::StorageModify(p) => write!(f, "storage.modify:{p}"),
            Self::StorageStage(p) => write!(f, "storage.stage:{p}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Normalise a scope path: absolute, no `.`/`..` segments, no trailing slash (but `/`).
fn normalise_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

impl Capability {
    /// Parse one scope token.
    pub fn parse(scope: &str) -> Self {
        let other = || Self::Other(scope.to_string());
        match scope {
            "compute.read" => return Self::ComputeRead,
            "compute.modify" => return Self::ComputeModify,
            "compute.create" => return Self::ComputeCreate,
            "compute.cancel" => return Self::ComputeCancel,
            _ => {}
        }
        let Some((kind, path)) = scope.split_once(':') else {
            return other();
        };
        let Some(path) = normalise_path(path) else {
            return other();
        };
        match kind {
            "storage.read" | "read" => Self::StorageRead(path),
            "storage.create" => Self::StorageCreate(path),
            "storage.modify" | "write" => Self::StorageModify(path),
            "storage.stage" => Self::StorageStage(path),
            _ => other(),
        }
    }

    /// Parse a space-separated `scope` claim.
    pub fn parse_list(scopes: &str) -> Vec<Self> {
        scopes.split_ascii_whitespace().map(Self::parse).collect()
    }

    /// Whether holding `self` satisfies a requirement for `required`: the same capability,
    /// and for storage, a path at or above the required one.
    pub fn satisfies(&self, required: &Capability) -> bool {
        fn covers(have: &str, want: &str) -> bool {
            have == "/"
                || want == have
                || want
                    .strip_prefix(have)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        match (self, required) {
            (Self::StorageRead(h), Self::StorageRead(w))
            | (Self::StorageCreate(h), Self::StorageCreate(w))
            | (Self::StorageModify(h), Self::StorageModify(w))
            | (Self::StorageStage(h), Self::StorageStage(w)) => covers(h, w),
            (a, b) => a == b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wlcg_and_scitokens_scopes() {
        let caps = Capability::parse_list(
            "openid compute.create storage.read:/home/alice read:/data write:/data/out/ x:y",
        );
        assert_eq!(
            caps,
            vec![
                Capability::Other("openid".into()),
                Capability::ComputeCreate,
                Capability::StorageRead("/home/alice".into()),
                Capability::StorageRead("/data".into()),
                Capability::StorageModify("/data/out".into()),
                Capability::Other("x:y".into()),
            ]
        );
        assert_eq!(
            Capability::parse("storage.read:/a/../b"),
            Capability::Other("storage.read:/a/../b".into())
        );
    }

    #[test]
    fn path_scopes_cover_subpaths_only() {
        let have = Capability::parse("storage.read:/home/alice");
        assert!(have.satisfies(&Capability::parse("storage.read:/home/alice/x")));
        assert!(have.satisfies(&Capability::parse("storage.read:/home/alice")));
        assert!(!have.satisfies(&Capability::parse("storage.read:/home/alicebob")));
        assert!(!have.satisfies(&Capability::parse("storage.modify:/home/alice")));
        assert!(
            Capability::parse("storage.read:/").satisfies(&Capability::parse("storage.read:/x"))
        );
        assert!(Capability::ComputeCreate.satisfies(&Capability::parse("compute.create")));
        assert!(!Capability::ComputeRead.satisfies(&Capability::ComputeCreate));
    }
}
