//! Who someone is and which accounts that gives them: distinguished names, the grid-mapfile
//! and the token map, pool accounts and their gridmapdir leases, suspensions, and the mapping
//! engine that decides ([`mapping::Mapper`]).

use std::fmt;

use crate::identity::dn::DistinguishedName;

pub mod dn;
pub mod gridmap;
pub mod gridmapdir;
pub mod mapping;
pub mod pool;
pub mod restriction;
pub mod rights;
pub mod suspension;
pub mod tokenmap;

/// Who authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The end-entity DN of a verified certificate chain.
    Certificate(DistinguishedName),
    /// The issuer and subject of a verified token.
    Token { issuer: String, subject: String },
    /// The key id of a verified OpenSSH certificate and its CA's fingerprint.
    SshCertificate { key_id: String, ca: String },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate(dn) => write!(f, "{}", dn.to_slash()),
            Self::Token { issuer, subject } => write!(f, "{subject} (issuer {issuer})"),
            Self::SshCertificate { key_id, ca } => {
                write!(f, "OpenSSH certificate {key_id:?} (CA {ca})")
            }
        }
    }
}
