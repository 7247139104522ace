//! The few libpam calls the module makes (Linux-PAM, `<security/pam_modules.h>` and
//! `<security/pam_ext.h>`), behind [`PamHandle`].
//!
//! Linked against the runtime library `libpam.so.0` by its file name, so building needs no
//! development package. Secrets that pass through C memory (conversation answers, the copy
//! handed to `pam_set_item` and `pam_set_data`) are wiped before they are freed.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use hpccert_core::host::pam::{HandleError, KeptTrust, LogLevel, PamHandle, Secret};

/// libpam's opaque `pam_handle_t`.
#[derive(Debug)]
#[repr(C)]
pub struct RawPamHandle {
    _opaque: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

const PAM_SUCCESS: c_int = 0;
const PAM_CONV: c_int = 5;
const PAM_AUTHTOK: c_int = 6;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;

#[repr(C)]
pub(crate) struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub(crate) struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub(crate) type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
pub(crate) struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

type CleanupFn =
    unsafe extern "C" fn(pamh: *mut RawPamHandle, data: *mut c_void, error_status: c_int);

#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_get_user(
        pamh: *mut RawPamHandle,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_get_item(pamh: *const RawPamHandle, item_type: c_int, item: *mut *const c_void)
    -> c_int;
    fn pam_set_item(pamh: *mut RawPamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_getenv(pamh: *mut RawPamHandle, name: *const c_char) -> *const c_char;
    fn pam_putenv(pamh: *mut RawPamHandle, name_value: *const c_char) -> c_int;
    fn pam_get_data(
        pamh: *const RawPamHandle,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_set_data(
        pamh: *mut RawPamHandle,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    fn pam_strerror(pamh: *mut RawPamHandle, errnum: c_int) -> *const c_char;
    fn pam_syslog(pamh: *const RawPamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// The module arguments as C strings; `None` when the vector is malformed.
///
/// # Safety
/// `argv` points to `argc` pointers to NUL-terminated strings that outlive `'a`.
pub unsafe fn arguments<'a>(argc: c_int, argv: *const *const c_char) -> Option<Vec<&'a CStr>> {
    let n = usize::try_from(argc).ok()?;
    if n == 0 {
        return Some(Vec::new());
    }
    if argv.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `argc` valid pointers at `argv`.
    let pointers = unsafe { std::slice::from_raw_parts(argv, n) };
    pointers
        .iter()
        .map(|&p| {
            // SAFETY: a non-null entry is a NUL-terminated string that outlives 'a.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
        })
        .collect()
}

/// Overwrite `len` bytes at `p` with zeros in a way the compiler does not remove.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
unsafe fn wipe_raw(p: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: `p + i` is inside the region the caller vouches for.
        unsafe { ptr::write_volatile(p.add(i), 0) };
    }
}

fn wipe(bytes: &mut [u8]) {
    // SAFETY: a mutable slice is valid for writes of its length.
    unsafe { wipe_raw(bytes.as_mut_ptr(), bytes.len()) }
}

/// A C string holding a secret: wiped when dropped.
struct SecretCString(Option<CString>);

impl SecretCString {
    fn new(secret: &Secret, call: &'static str) -> Result<Self, HandleError> {
        CString::new(secret.as_bytes().to_vec())
            .map(|c| Self(Some(c)))
            .map_err(|e| {
                let mut v = e.into_vec();
                wipe(&mut v);
                HandleError::new(call, None, "the secret holds a NUL byte")
            })
    }
    fn as_ptr(&self) -> *const c_char {
        self.0.as_ref().map_or(ptr::null(), |c| c.as_ptr())
    }
    /// Give up ownership (to libpam's data store; see [`cleanup_secret`]).
    fn into_raw(mut self) -> *mut c_char {
        self.0.take().map_or(ptr::null_mut(), CString::into_raw)
    }
}

impl Drop for SecretCString {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let mut v = c.into_bytes_with_nul();
            wipe(&mut v);
        }
    }
}

/// The cleanup libpam calls for our `pam_set_data` entry when it is replaced or the handle
/// ends: wipe and free the string.
unsafe extern "C" fn cleanup_secret(_pamh: *mut RawPamHandle, data: *mut c_void, _status: c_int) {
    let _ = std::panic::catch_unwind(|| {
        if !data.is_null() {
            // SAFETY: `data` is the pointer `SecretCString::into_raw` made in `set_data`, and
            // libpam calls the cleanup once per stored pointer.
            let c = unsafe { CString::from_raw(data.cast::<c_char>()) };
            drop(SecretCString(Some(c)));
        }
    });
}

/// The `pam_set_data` key of the trust store kept for the transaction.
const DATA_TRUST: &CStr = c"pam_hpccert_trust_store";

/// The cleanup libpam calls for the kept trust store when it is replaced or the handle ends
/// (before libpam unloads the module): free it.
unsafe extern "C" fn cleanup_trust(_pamh: *mut RawPamHandle, data: *mut c_void, _status: c_int) {
    let _ = std::panic::catch_unwind(|| {
        if !data.is_null() {
            // SAFETY: `data` is the pointer `Box::into_raw` made in `keep_trust`, and libpam
            // calls the cleanup once per stored pointer.
            drop(unsafe { Box::from_raw(data.cast::<Arc<KeptTrust>>()) });
        }
    });
}

/// A live libpam handle, for the duration of one `pam_sm_*` call.
#[derive(Debug)]
pub struct LibPam {
    pamh: NonNull<RawPamHandle>,
}

impl LibPam {
    /// # Safety
    /// `pamh` is null or the handle libpam passed to the running `pam_sm_*` function, and the
    /// result is not kept beyond that call.
    pub unsafe fn from_raw(pamh: *mut RawPamHandle) -> Option<Self> {
        NonNull::new(pamh).map(|pamh| Self { pamh })
    }

    fn raw(&self) -> *mut RawPamHandle {
        self.pamh.as_ptr()
    }

    fn error(&self, call: &'static str, code: c_int) -> HandleError {
        // SAFETY: the handle is live; pam_strerror returns a static or handle-owned string,
        // copied at once.
        let text = unsafe {
            let s = pam_strerror(self.raw(), code);
            if s.is_null() {
                format!("error {code}")
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        };
        HandleError::new(call, Some(code), text)
    }

    /// An item that is a pointer (PAM_CONV, PAM_AUTHTOK); null when not set.
    fn item(&self, call: &'static str, item_type: c_int) -> Result<*const c_void, HandleError> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: the handle is live and `item` is a valid out pointer.
        let rc = unsafe { pam_get_item(self.raw(), item_type, &mut item) };
        if rc == PAM_SUCCESS {
            Ok(item)
        } else {
            Err(self.error(call, rc))
        }
    }
}

impl PamHandle for LibPam {
    fn user(&mut self) -> Result<String, HandleError> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: the handle is live, `user` is a valid out pointer, and a null prompt makes
        // libpam use its default one (it asks only when the application set no user).
        let rc = unsafe { pam_get_user(self.raw(), &mut user, ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(self.error("pam_get_user", rc));
        }
        if user.is_null() {
            return Err(HandleError::new("pam_get_user", None, "no user name"));
        }
        // SAFETY: on success libpam returns its NUL-terminated PAM_USER, valid until the item
        // changes; it is copied at once.
        let bytes = unsafe { CStr::from_ptr(user) }.to_bytes().to_vec();
        String::from_utf8(bytes)
            .map_err(|_| HandleError::new("pam_get_user", None, "the user name is not UTF-8"))
    }

    fn authtok(&self) -> Result<Option<Secret>, HandleError> {
        let item = self.item("pam_get_item(PAM_AUTHTOK)", PAM_AUTHTOK)?;
        if item.is_null() {
            return Ok(None);
        }
        // SAFETY: PAM_AUTHTOK is a NUL-terminated string owned by libpam; copied at once.
        let bytes = unsafe { CStr::from_ptr(item.cast::<c_char>()) }.to_bytes();
        Ok(Some(Secret::new(bytes.to_vec())))
    }

    fn set_authtok(&mut self, token: &Secret) -> Result<(), HandleError> {
        let c = SecretCString::new(token, "pam_set_item(PAM_AUTHTOK)")?;
        // SAFETY: the handle is live and `c` is a NUL-terminated string; libpam copies it.
        let rc = unsafe { pam_set_item(self.raw(), PAM_AUTHTOK, c.as_ptr().cast()) };
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(self.error("pam_set_item(PAM_AUTHTOK)", rc))
        }
    }

    fn prompt_secret(&mut self, prompt: &str) -> Result<Option<Secret>, HandleError> {
        let conv_error =
            |reason: &str| HandleError::new("conversation", Some(PAM_CONV_ERR), reason);
        let item = self.item("pam_get_item(PAM_CONV)", PAM_CONV)?;
        if item.is_null() {
            return Err(conv_error("the application set no conversation"));
        }
        // SAFETY: the PAM_CONV item is the application's `struct pam_conv`, which lives as
        // long as the handle.
        let conv = unsafe { &*item.cast::<PamConv>() };
        let Some(converse) = conv.conv else {
            return Err(conv_error("the application set no conversation function"));
        };
        let text = CString::new(prompt).map_err(|_| conv_error("the prompt holds a NUL byte"))?;
        let message = PamMessage {
            msg_style: PAM_PROMPT_ECHO_OFF,
            msg: text.as_ptr(),
        };
        let mut messages: *const PamMessage = &message;
        let mut responses: *mut PamResponse = ptr::null_mut();
        // SAFETY: one message in a one-element pointer array (the Linux-PAM and the Solaris
        // layouts agree for one message), both alive during the call; `responses` is a valid
        // out pointer; `appdata_ptr` is the application's own.
        let rc = unsafe { converse(1, &mut messages, &mut responses, conv.appdata_ptr) };
        // the responses are ours to free, whatever the return code says
        let answer = if responses.is_null() {
            None
        } else {
            // SAFETY: the application malloc'd an array of one response for one message.
            let response = unsafe { &mut *responses };
            let answer = if response.resp.is_null() {
                None
            } else {
                // SAFETY: `resp` is a malloc'd NUL-terminated string that we now own: copied,
                // wiped and freed here, once.
                unsafe {
                    let len = libc::strlen(response.resp);
                    let bytes =
                        std::slice::from_raw_parts(response.resp.cast::<u8>(), len).to_vec();
                    wipe_raw(response.resp.cast::<u8>(), len);
                    libc::free(response.resp.cast());
                    Some(Secret::new(bytes))
                }
            };
            // SAFETY: the array is malloc'd by the application and ours to free, once.
            unsafe { libc::free(responses.cast()) };
            answer
        };
        if rc == PAM_SUCCESS {
            Ok(answer)
        } else {
            Err(HandleError::new(
                "conversation",
                Some(rc),
                self.error("conversation", rc).reason,
            ))
        }
    }

    fn getenv(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: the handle is live and `name` is NUL-terminated; the result is libpam's
        // string (or null), copied at once.
        unsafe {
            let value = pam_getenv(self.raw(), name.as_ptr());
            (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
        }
    }

    fn putenv(&mut self, name: &str, value: Option<&str>) -> Result<(), HandleError> {
        let entry = match value {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        let entry = CString::new(entry)
            .map_err(|_| HandleError::new("pam_putenv", None, "a NUL byte in the variable"))?;
        // SAFETY: the handle is live and `entry` is NUL-terminated; libpam copies it.
        let rc = unsafe { pam_putenv(self.raw(), entry.as_ptr()) };
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(self.error("pam_putenv", rc))
        }
    }

    fn data(&self, key: &str) -> Option<Secret> {
        let key = CString::new(key).ok()?;
        if key.as_c_str() == DATA_TRUST {
            // not a string: only `kept_trust` reads it
            return None;
        }
        let mut data: *const c_void = ptr::null();
        // SAFETY: the handle is live, `key` is NUL-terminated, `data` a valid out pointer.
        let rc = unsafe { pam_get_data(self.raw(), key.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: only this module stores data under its (module-named) keys, and it stores
        // NUL-terminated strings (`set_data`); copied at once.
        let bytes = unsafe { CStr::from_ptr(data.cast::<c_char>()) }.to_bytes();
        Some(Secret::new(bytes.to_vec()))
    }

    fn set_data(&mut self, key: &str, value: Option<&Secret>) -> Result<(), HandleError> {
        let key =
            CString::new(key).map_err(|_| HandleError::new("pam_set_data", None, "bad key"))?;
        if key.as_c_str() == DATA_TRUST {
            return Err(HandleError::new(
                "pam_set_data",
                None,
                "the trust store's key is not for strings",
            ));
        }
        let (data, cleanup): (*mut c_char, Option<CleanupFn>) = match value {
            Some(v) => (
                SecretCString::new(v, "pam_set_data")?.into_raw(),
                Some(cleanup_secret as CleanupFn),
            ),
            None => (ptr::null_mut(), None),
        };
        // SAFETY: the handle is live and `key` NUL-terminated (libpam copies it); `data` is
        // null or a pointer from `CString::into_raw` that libpam hands to `cleanup_secret`
        // when the entry is replaced or the handle ends.
        let rc = unsafe { pam_set_data(self.raw(), key.as_ptr(), data.cast(), cleanup) };
        if rc == PAM_SUCCESS {
            return Ok(());
        }
        if !data.is_null() {
            // SAFETY: libpam did not take the pointer: reclaim it (wiped on drop).
            drop(SecretCString(Some(unsafe { CString::from_raw(data) })));
        }
        Err(self.error("pam_set_data", rc))
    }

    fn kept_trust(&self) -> Option<Arc<KeptTrust>> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: the handle is live, the key NUL-terminated, `data` a valid out pointer.
        let rc = unsafe { pam_get_data(self.raw(), DATA_TRUST.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: only `keep_trust` stores under this key: a `Box<Arc<KeptTrust>>` that
        // libpam owns until the cleanup; the Arc is cloned at once.
        let kept = unsafe { &*data.cast::<Arc<KeptTrust>>() };
        Some(Arc::clone(kept))
    }

    fn keep_trust(&mut self, trust: Arc<KeptTrust>) -> Result<(), HandleError> {
        let data = Box::into_raw(Box::new(trust));
        // SAFETY: the handle is live and the key NUL-terminated; `data` is a pointer from
        // `Box::into_raw` that libpam hands to `cleanup_trust` when the entry is replaced or
        // the handle ends (which also frees a store replaced here).
        let rc = unsafe {
            pam_set_data(
                self.raw(),
                DATA_TRUST.as_ptr(),
                data.cast(),
                Some(cleanup_trust as CleanupFn),
            )
        };
        if rc == PAM_SUCCESS {
            return Ok(());
        }
        // SAFETY: libpam did not take the pointer: reclaim it.
        drop(unsafe { Box::from_raw(data) });
        Err(self.error("pam_set_data", rc))
    }

    fn forget_trust(&mut self) {
        // SAFETY: the handle is live and the key NUL-terminated; replacing the entry with null
        // makes libpam run `cleanup_trust` on the kept pointer.
        let _ = unsafe { pam_set_data(self.raw(), DATA_TRUST.as_ptr(), ptr::null_mut(), None) };
    }

    fn syslog(&mut self, level: LogLevel, message: &str) {
        let text = CString::new(message.replace('\0', "?")).unwrap_or_default();
        // SAFETY: the handle is live; the format is a constant "%s" with one C string
        // argument, so the message cannot act as a format.
        unsafe {
            pam_syslog(
                self.raw(),
                level.syslog_priority(),
                c"%s".as_ptr(),
                text.as_ptr(),
            )
        };
    }
}
