//! The login node's side: the PAM module's logic ([`pam`]), the NSS cache files
//! ([`nsscache`]), the portal's export bundle ([`export`]), the login daemon's
//! verified-credential cache ([`credential_cache`]), atomic writes, reloading files when they
//! change, and systemd notification.

pub mod atomic_file;
pub mod credential_cache;
pub mod export;
pub mod notify;
pub mod nsscache;
pub mod pam;
pub mod reload;
