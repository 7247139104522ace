//! hpccert-core: every decision of hpccert.
//!
//! Credentials are verified into proof types ([`x509::VerifiedChain`]), mapped to accounts
//! by one engine ([`mapping::Mapper`]) into a [`mapping::Decision`] that carries its reasons
//! in words. Front ends (sshd-gsi, the PAM module, gridmap-tool) only ask and act.
//!
//! Pure logic over files: no async runtime, no network. Time is a parameter; only
//! [`clock`] reads the system clock.
#![forbid(unsafe_code)]

pub mod atomic_file;
pub mod clock;
pub mod config;
pub mod devpki;
pub mod devtoken;
pub mod dn;
pub mod export;
pub mod gridmap;
pub mod mapping;
pub mod namespaces;
pub mod notify;
pub mod nsscache;
pub mod pam;
pub mod pool;
pub mod reload;
pub mod sshca;
pub mod sshcert;
pub mod suspension;
pub mod token;
pub mod tokenmap;
pub mod trust;
pub mod x509;
