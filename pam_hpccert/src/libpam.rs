//! [`hpccert_core::host::pam::PamHandle`] over libpam's handle: pam-bindings' [`pam::module::PamHandle`]
//! for PAM_USER, the items, the conversation and the module data, and [`PamHandleExt`] for
//! what the crate does not bind (the PAM environment, setting PAM_AUTHTOK, `pam_syslog`,
//! `pam_strerror`).
//!
//! Secrets that pass through C memory are wiped: conversation answers by pam-bindings
//! (zeroized before libpam's copy is freed), the copy handed to `pam_set_item` here
//! ([`Zeroizing`]). Module data is kept as Rust values in boxes that libpam owns until the
//! entry is replaced or the handle ends, when pam-bindings' cleanup drops them (a [`Secret`]
//! wipes itself).

use std::ffi::{CStr, CString, c_int};
use std::fmt;
use std::sync::Arc;

use hpccert_core::host::pam::{HandleError, KeptTrust, LogLevel, PamHandle, Secret};
use pam::constants::{PAM_PROMPT_ECHO_OFF, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, User};
use zeroize::Zeroizing;

use crate::pam_ext::PamHandleExt;

/// The `pam_set_data` key of the trust store kept for the transaction.
const DATA_TRUST: &str = "pam_hpccert_trust_store";

/// What this module keeps under a string key ([`PamHandle::set_data`]): the secret, or
/// nothing once it was cleared (replacing the entry frees the previous value).
struct KeptSecret(Option<Secret>);

/// What this module keeps under [`DATA_TRUST`]: the store, or nothing once it was forgotten.
struct KeptTrustSlot(Option<Arc<KeptTrust>>);

/// A live libpam handle, for the duration of one `pam_sm_*` call.
pub struct LibPam<'a> {
    pamh: &'a mut pam::module::PamHandle,
}

impl fmt::Debug for LibPam<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibPam").finish_non_exhaustive()
    }
}

impl<'a> LibPam<'a> {
    /// The handle libpam passed to the running `pam_sm_*` function.
    pub fn new(pamh: &'a mut pam::module::PamHandle) -> Self {
        Self { pamh }
    }

    /// Whether PAM_USER is set and not UTF-8.
    fn user_is_not_utf8(&self) -> bool {
        matches!(self.pamh.get_item::<User>(), Ok(Some(user)) if user.to_str().is_err())
    }

    fn error(&self, call: &'static str, code: PamResultCode) -> HandleError {
        let code = code as c_int;
        HandleError::new(call, Some(code), self.pamh.strerror(code))
    }
}

impl PamHandle for LibPam<'_> {
    fn rhost(&self) -> Option<String> {
        // PAM_RHOST as the application set it (sshd: the client's address); not UTF-8 or
        // unset is an unknown source, which a from= restriction refuses
        match self.pamh.get_item::<RHost>() {
            Ok(Some(RHost(host))) => host.to_str().ok().map(str::to_string),
            _ => None,
        }
    }

    fn user(&mut self) -> Result<String, HandleError> {
        // a null prompt: libpam uses its default one (it asks only when the application set
        // no user)
        match self.pamh.get_user(None) {
            Ok(user) => Ok(user),
            // pam-bindings also reports a user name that is not UTF-8 as PAM_SYSTEM_ERR: say
            // which it was
            Err(PamResultCode::PAM_SYSTEM_ERR) if self.user_is_not_utf8() => Err(HandleError::new(
                "pam_get_user",
                None,
                "the user name is not UTF-8",
            )),
            Err(code) => Err(self.error("pam_get_user", code)),
        }
    }

    fn authtok(&self) -> Result<Option<Secret>, HandleError> {
        match self.pamh.get_item::<AuthTok>() {
            Ok(token) => Ok(token.map(|t| Secret::new(t.as_bytes().to_vec()))),
            Err(code) => Err(self.error("pam_get_item(PAM_AUTHTOK)", code)),
        }
    }

    fn set_authtok(&mut self, token: &Secret) -> Result<(), HandleError> {
        let call = "pam_set_item(PAM_AUTHTOK)";
        let mut bytes = Zeroizing::new(Vec::with_capacity(token.len() + 1));
        bytes.extend_from_slice(token.as_bytes());
        bytes.push(0);
        let c = CStr::from_bytes_with_nul(&bytes)
            .map_err(|_| HandleError::new(call, None, "the secret holds a NUL byte"))?;
        let outcome = self.pamh.set_authtok(c);
        outcome.map_err(|code| self.error(call, code))
    }

    fn prompt_secret(&mut self, prompt: &str) -> Result<Option<Secret>, HandleError> {
        let conv_error = |reason: &str| {
            HandleError::new(
                "conversation",
                Some(PamResultCode::PAM_CONV_ERR as c_int),
                reason,
            )
        };
        if prompt.contains('\0') {
            return Err(conv_error("the prompt holds a NUL byte"));
        }
        let conv = match self.pamh.get_item::<Conv>() {
            Ok(Some(conv)) => conv,
            Ok(None) => return Err(conv_error("the application set no conversation")),
            Err(code) => return Err(self.error("pam_get_item(PAM_CONV)", code)),
        };
        match conv.send(PAM_PROMPT_ECHO_OFF, prompt) {
            Ok(answer) => Ok(answer.map(|a| Secret::new(a.as_bytes().to_vec()))),
            Err(code) => Err(self.error("conversation", code)),
        }
    }

    fn getenv(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let value = self.pamh.getenv(&name)?;
        Some(value.to_string_lossy().into_owned())
    }

    fn putenv(&mut self, name: &str, value: Option<&str>) -> Result<(), HandleError> {
        let entry = match value {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        let entry = CString::new(entry)
            .map_err(|_| HandleError::new("pam_putenv", None, "a NUL byte in the variable"))?;
        let outcome = self.pamh.putenv(&entry);
        outcome.map_err(|code| self.error("pam_putenv", code))
    }

    fn data(&self, key: &str) -> Option<Secret> {
        if key == DATA_TRUST || key.contains('\0') {
            // not a string: only `kept_trust` reads it
            return None;
        }
        // SAFETY: only this module stores data under its (module-named) keys, and under every
        // key but DATA_TRUST it stores a `KeptSecret` (`set_data`); libpam owns the box until
        // the entry is replaced, which takes `&mut self`.
        let kept = unsafe { self.pamh.get_data::<KeptSecret>(key) }.ok()?;
        kept.0.as_ref().map(|s| Secret::new(s.as_bytes().to_vec()))
    }

    fn set_data(&mut self, key: &str, value: Option<&Secret>) -> Result<(), HandleError> {
        if key.contains('\0') {
            return Err(HandleError::new("pam_set_data", None, "bad key"));
        }
        if key == DATA_TRUST {
            return Err(HandleError::new(
                "pam_set_data",
                None,
                "the trust store's key is not for strings",
            ));
        }
        let kept = KeptSecret(value.map(|v| Secret::new(v.as_bytes().to_vec())));
        let outcome = self.pamh.set_data(key, Box::new(kept));
        outcome.map_err(|code| self.error("pam_set_data", code))
    }

    fn kept_trust(&self) -> Option<Arc<KeptTrust>> {
        // SAFETY: only `keep_trust` and `forget_trust` store under DATA_TRUST, always a
        // `KeptTrustSlot`; the Arc is cloned at once.
        let slot = unsafe { self.pamh.get_data::<KeptTrustSlot>(DATA_TRUST) }.ok()?;
        slot.0.as_ref().map(Arc::clone)
    }

    fn keep_trust(&mut self, trust: Arc<KeptTrust>) -> Result<(), HandleError> {
        // libpam drops a store kept earlier (its cleanup) when the entry is replaced
        let outcome = self
            .pamh
            .set_data(DATA_TRUST, Box::new(KeptTrustSlot(Some(trust))));
        outcome.map_err(|code| self.error("pam_set_data", code))
    }

    fn forget_trust(&mut self) {
        // replacing the entry makes libpam run the cleanup of the kept store now; the empty
        // slot goes at pam_end
        let _ = self
            .pamh
            .set_data(DATA_TRUST, Box::new(KeptTrustSlot(None)));
    }

    fn syslog(&mut self, level: LogLevel, message: &str) {
        let text = CString::new(message.replace('\0', "?")).unwrap_or_default();
        self.pamh.syslog(level.syslog_priority(), &text);
    }
}
