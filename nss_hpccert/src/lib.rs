//! nss_hpccert: the NSS module (pool and portal-managed accounts by name).
//! Not built yet (issue #6): this crate exports no NSS entry points.
#![forbid(unsafe_code)]
