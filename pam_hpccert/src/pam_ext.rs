//! The libpam calls the module makes that pam-bindings 0.4 does not bind, as an extension of
//! its [`PamHandle`] in the crate's own shape (a [`PamResult`], borrowed C strings in and
//! out), so that each could be offered upstream as it is:
//!
//! - `pam_getenv` / `pam_putenv`: the PAM environment, where the module exports the identity
//!   and the application hands over a certificate chain;
//! - `pam_set_item(PAM_AUTHTOK)`: the crate's `AuthTok` item can be read but not built (its
//!   field is private and it has no constructor), so PAM_AUTHTOK cannot be set through it;
//! - `pam_syslog` (variadic, with the `pam_hpccert(SERVICE:TYPE): ` prefix) and
//!   `pam_strerror` (libpam's text for a code, for the log).
//!
//! Linked against the runtime library `libpam.so.0` by its file name, like pam-bindings'
//! `-lpam` (see `build.rs`): building needs no development package.

use std::ffi::{CStr, c_char, c_int, c_void};

use pam::constants::PamResultCode;
use pam::items::ItemType;
use pam::module::{PamHandle, PamResult};

#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// A libpam return value as pam-bindings' result (an unknown code is `PAM_SYSTEM_ERR`, as the
/// crate maps them).
fn result(rc: c_int) -> PamResult<()> {
    match PamResultCode::try_from(rc) {
        Ok(PamResultCode::PAM_SUCCESS) => Ok(()),
        Ok(code) => Err(code),
        Err(_) => Err(PamResultCode::PAM_SYSTEM_ERR),
    }
}

/// What [`PamHandle`] lacks for this module.
pub(crate) trait PamHandleExt {
    /// A PAM environment variable (`pam_getenv`); valid until the environment changes, which
    /// takes `&mut self`.
    fn getenv(&self, name: &CStr) -> Option<&CStr>;
    /// Set (`NAME=value`) or remove (`NAME`) a PAM environment variable (`pam_putenv`, which
    /// copies it).
    fn putenv(&mut self, name_value: &CStr) -> PamResult<()>;
    /// Set PAM_AUTHTOK (`pam_set_item`, which copies it; wiping the caller's copy is the
    /// caller's).
    fn set_authtok(&mut self, token: &CStr) -> PamResult<()>;
    /// Log `message` as it is (`pam_syslog` with the format `%s`).
    fn syslog(&self, priority: c_int, message: &CStr);
    /// libpam's text for a return code (`pam_strerror`).
    fn strerror(&self, code: c_int) -> String;
}

impl PamHandleExt for PamHandle {
    fn getenv(&self, name: &CStr) -> Option<&CStr> {
        // SAFETY: the handle is live (a reference); pam_getenv only reads it, despite its
        // non-const parameter, and `name` is NUL-terminated. The result is null or a string
        // of the handle's environment, which stays until the environment is changed through
        // `&mut self`, so the borrow of `self` covers it.
        unsafe {
            let value = pam_getenv(std::ptr::from_ref(self).cast_mut(), name.as_ptr());
            (!value.is_null()).then(|| CStr::from_ptr(value))
        }
    }

    fn putenv(&mut self, name_value: &CStr) -> PamResult<()> {
        // SAFETY: the handle is live and `name_value` NUL-terminated; libpam copies it.
        result(unsafe { pam_putenv(self, name_value.as_ptr()) })
    }

    fn set_authtok(&mut self, token: &CStr) -> PamResult<()> {
        let item = ItemType::AuthTok as c_int;
        // SAFETY: the handle is live and `token` NUL-terminated (the type PAM_AUTHTOK
        // holds); libpam copies it.
        result(unsafe { pam_set_item(self, item, token.as_ptr().cast()) })
    }

    fn syslog(&self, priority: c_int, message: &CStr) {
        // SAFETY: the handle is live; the format is a constant "%s" with one C string
        // argument, so the message cannot act as a format.
        unsafe { pam_syslog(self, priority, c"%s".as_ptr(), message.as_ptr()) };
    }

    fn strerror(&self, code: c_int) -> String {
        // SAFETY: the handle is live (pam_strerror does not use it in Linux-PAM); the result
        // is a static string (or null), copied at once.
        unsafe {
            let text = pam_strerror(std::ptr::from_ref(self).cast_mut(), code);
            if text.is_null() {
                format!("error {code}")
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        }
    }
}
