//! What is trusted and how credentials are verified: the CA directory, CRLs and signing
//! policies ([`store`], [`namespaces`]), X.509 and RFC 3820 proxy chains ([`x509`]), OpenSSH
//! user certificates ([`sshcert`]), the site's SSH user CA ([`sshca`]) and proxy files a client
//! hands over after an X.509 login ([`proxyfile`]).

mod certinfo;
pub mod namespaces;
pub mod proxyfile;
pub mod sshca;
pub mod sshcert;
pub mod store;
pub mod x509;
