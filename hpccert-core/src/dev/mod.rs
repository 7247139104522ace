//! Development fixtures: a dev PKI (CAs, user certificates, proxies, CRLs) and dev bearer
//! tokens, for `--dev` modes and tests. Never used by a production configuration.

pub mod pki;
pub mod token;
