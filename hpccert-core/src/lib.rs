//! hpccert-core: every decision of hpccert.
//!
//! Credentials are verified into proof types ([`trust::x509::VerifiedChain`]), mapped to accounts
//! by one engine ([`identity::mapping::Mapper`]) into a [`identity::mapping::Decision`] that carries its reasons
//! in words. Front ends (sshd-gsi, the PAM module, gridmap-tool) only ask and act.
//!
//! Pure logic over files: no async runtime, no network. Time is a parameter; only
//! [`clock`] reads the system clock.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod dev;
pub mod host;
pub mod identity;
pub mod token;
pub mod trust;
