//! The login node's side: the PAM module's logic ([`pam`]), the NSS cache files
//! ([`nsscache`]), the portal's export bundle ([`export`]), atomic writes, reloading files
//! when they change, and systemd notification.

pub mod atomic_file;
pub mod export;
pub mod notify;
pub mod nsscache;
pub mod pam;
pub mod reload;
