//! pam_hpccert: the PAM module (token and certificate checks for system OpenSSH and other PAM
//! services). Not built yet (issue #6): this crate exports no PAM entry points, so a stack that
//! names it fails to load it, which PAM treats as a failure (fail closed).
#![forbid(unsafe_code)]
