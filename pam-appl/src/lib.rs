//! The application side of Linux-PAM (`<security/pam_appl.h>`): start, items, environment,
//! authentication, account, credentials, session, end. sshd-gsi's PAM helper runs the
//! account and session stacks; the mapping portal checks a local account's password.
//!
//! Written here rather than taken from pam-client because sshd-gsi must open a session even
//! when `pam_setcred` fails, as sshd does when PAM did not authenticate the user (pam-client
//! ties the two together), and because it keeps bindgen and libclang out of the build.
//! Linked against the runtime library `libpam.so.0` by its file name, as pam_hpccert is, so
//! building needs no development package.
#![allow(unsafe_code)] // FFI by nature: each block says why it is sound

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};
use std::ptr::{self, NonNull};

use zeroize::{Zeroize, Zeroizing};

/// libpam's opaque `pam_handle_t`.
#[repr(C)]
struct RawPamHandle {
    _opaque: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

const PAM_SUCCESS: c_int = 0;
const PAM_CONV_ERR: c_int = 19;
const PAM_BUF_ERR: c_int = 5;
const PAM_AUTH_ERR: c_int = 7;
const PAM_USER: c_int = 2;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;
pub const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
pub const PAM_SILENT: c_int = 0x8000;
pub const PAM_ESTABLISH_CRED: c_int = 0x0002;
pub const PAM_DELETE_CRED: c_int = 0x0004;
pub const PAM_REINITIALIZE_CRED: c_int = 0x0008;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_start(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        pamh: *mut *mut RawPamHandle,
    ) -> c_int;
    fn pam_end(pamh: *mut RawPamHandle, pam_status: c_int) -> c_int;
    fn pam_set_item(pamh: *mut RawPamHandle, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_get_item(pamh: *const RawPamHandle, item_type: c_int, item: *mut *const c_void)
    -> c_int;
    fn pam_putenv(pamh: *mut RawPamHandle, name_value: *const c_char) -> c_int;
    fn pam_getenvlist(pamh: *mut RawPamHandle) -> *mut *mut c_char;
    fn pam_authenticate(pamh: *mut RawPamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut RawPamHandle, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut RawPamHandle, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut RawPamHandle, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut RawPamHandle, flags: c_int) -> c_int;
    fn pam_strerror(pamh: *mut RawPamHandle, errnum: c_int) -> *const c_char;
}

/// What the application answers to PAM's messages.
pub trait Conversation {
    /// A prompt (`echo`: `PAM_PROMPT_ECHO_ON`): the answer, or `None` to fail the
    /// conversation (and so the module that asked).
    fn prompt(&mut self, echo: bool, text: &str) -> Option<Zeroizing<String>>;
    /// `PAM_TEXT_INFO`.
    fn info(&mut self, text: &str);
    /// `PAM_ERROR_MSG`.
    fn error(&mut self, text: &str);
}

/// Each message of one `pam_conv` call: the answers, or `None` when one cannot be answered.
fn answer_all(
    conv: &mut dyn Conversation,
    messages: &[(c_int, String)],
) -> Option<Vec<Option<Zeroizing<String>>>> {
    messages
        .iter()
        .map(|(style, text)| match *style {
            PAM_TEXT_INFO => {
                conv.info(text);
                Some(None)
            }
            PAM_ERROR_MSG => {
                conv.error(text);
                Some(None)
            }
            PAM_PROMPT_ECHO_OFF => conv.prompt(false, text).map(Some),
            PAM_PROMPT_ECHO_ON => conv.prompt(true, text).map(Some),
            _ => None,
        })
        .collect()
}

/// The `pam_conv` callback.
///
/// # Safety
/// Called by libpam with `num_msg` valid message pointers (Linux-PAM's layout: an array of
/// pointers), a valid `resp` out-pointer and the `appdata_ptr` given to `pam_start`, which
/// points to the [`Conversation`] boxed in [`Pam`], alive for the handle's whole life.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let run = || -> c_int {
        let Ok(n) = usize::try_from(num_msg) else {
            return PAM_CONV_ERR;
        };
        if n == 0 || msg.is_null() || resp.is_null() || appdata_ptr.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: appdata_ptr is the ConvBox given to pam_start (see above).
        let conv = unsafe { &mut *(appdata_ptr as *mut ConvBox) };
        let mut messages = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: libpam passes n valid message pointers.
            let m = unsafe { *msg.add(i) };
            if m.is_null() {
                return PAM_CONV_ERR;
            }
            // SAFETY: m is a valid pam_message; its text is NUL-terminated or NULL.
            let (style, text) = unsafe { ((*m).msg_style, (*m).msg) };
            let text = if text.is_null() {
                String::new()
            } else {
                // SAFETY: a non-NULL message text is a NUL-terminated string.
                unsafe { CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned()
            };
            messages.push((style, text));
        }
        let Some(answers) = answer_all(&mut *conv.0, &messages) else {
            return PAM_CONV_ERR;
        };
        // the answers in calloc'd memory that libpam frees (each text strdup'd; NULL for
        // info and error messages)
        // SAFETY: calloc of n zeroed responses (resp NULL, retcode 0).
        let out =
            unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
        if out.is_null() {
            return PAM_BUF_ERR;
        }
        for (i, answer) in answers.iter().enumerate() {
            let Some(text) = answer else { continue };
            let copy = CString::new(text.as_bytes()).ok().map(|c| {
                // SAFETY: a valid NUL-terminated string; strdup returns malloc'd memory.
                let p = unsafe { libc::strdup(c.as_ptr()) };
                // the temporary copy is wiped before it is freed
                let mut bytes = c.into_bytes();
                bytes.zeroize();
                p
            });
            match copy {
                Some(p) if !p.is_null() => {
                    // SAFETY: i < n, within the calloc'd array.
                    unsafe { (*out.add(i)).resp = p };
                }
                _ => {
                    free_answers(out, n);
                    return PAM_BUF_ERR;
                }
            }
        }
        // SAFETY: resp is a valid out-pointer.
        unsafe { *resp = out };
        PAM_SUCCESS
    };
    std::panic::catch_unwind(run).unwrap_or(PAM_CONV_ERR)
}

/// Wipe and free the answers built so far (on a failure half-way).
fn free_answers(out: *mut PamResponse, n: usize) {
    for i in 0..n {
        // SAFETY: i < n, within the calloc'd array; each resp is NULL or strdup'd.
        let p = unsafe { (*out.add(i)).resp };
        if !p.is_null() {
            // SAFETY: a NUL-terminated string we strdup'd: wiped, then freed once.
            unsafe {
                let len = libc::strlen(p);
                std::ptr::write_bytes(p, 0, len);
                libc::free(p.cast());
            }
        }
    }
    // SAFETY: the calloc'd array, freed once.
    unsafe { libc::free(out.cast()) };
}

/// The conversation behind `appdata_ptr` (a thin pointer to a fat one).
struct ConvBox(Box<dyn Conversation>);

/// A PAM transaction (`pam_start` .. `pam_end`).
pub struct Pam {
    handle: NonNull<RawPamHandle>,
    /// The conversation structures libpam points to: they outlive the handle.
    _conv: Box<PamConv>,
    _data: Box<ConvBox>,
    last: c_int,
    /// The user the transaction was started for: [`Pam::authenticate`] refuses when a module
    /// changed PAM_USER to another.
    user: String,
}

impl std::fmt::Debug for Pam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pam")
            .field("last", &self.last)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Pam {
    pub fn start(
        service: &str,
        user: &str,
        conversation: Box<dyn Conversation>,
    ) -> Result<Self, String> {
        let c_service =
            CString::new(service).map_err(|_| format!("PAM service {service:?} contains NUL"))?;
        let c_user = CString::new(user).map_err(|_| format!("user {user:?} contains NUL"))?;
        let mut data = Box::new(ConvBox(conversation));
        let conv = Box::new(PamConv {
            conv: Some(converse),
            appdata_ptr: (&mut *data as *mut ConvBox).cast(),
        });
        let mut handle: *mut RawPamHandle = ptr::null_mut();
        // SAFETY: valid NUL-terminated strings, a pam_conv that lives in a Box owned by the
        // returned Pam (as its appdata does), and a valid out-pointer.
        let rc = unsafe { pam_start(c_service.as_ptr(), c_user.as_ptr(), &*conv, &mut handle) };
        match NonNull::new(handle) {
            Some(handle) if rc == PAM_SUCCESS => Ok(Self {
                handle,
                _conv: conv,
                _data: data,
                last: PAM_SUCCESS,
                user: user.to_string(),
            }),
            Some(handle) => {
                // SAFETY: a handle pam_start returned, ended once.
                unsafe { pam_end(handle.as_ptr(), rc) };
                Err(format!("pam_start({service}) failed ({rc})"))
            }
            None => Err(format!("pam_start({service}) failed ({rc})")),
        }
    }

    fn check(&mut self, what: &str, rc: c_int) -> Result<(), String> {
        self.last = rc;
        if rc == PAM_SUCCESS {
            return Ok(());
        }
        // SAFETY: pam_strerror returns a static string (or NULL) for any code.
        let text = unsafe { pam_strerror(self.handle.as_ptr(), rc) };
        let text = if text.is_null() {
            format!("error {rc}")
        } else {
            // SAFETY: a non-NULL pam_strerror result is a NUL-terminated string.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Err(format!("{what}: {text}"))
    }

    /// A string item (`PAM_RHOST`, `PAM_TTY`).
    pub fn set_item(&mut self, item: c_int, value: &str) -> Result<(), String> {
        let v = CString::new(value).map_err(|_| format!("PAM item {value:?} contains NUL"))?;
        // SAFETY: libpam copies the string item; the handle is live.
        let rc = unsafe { pam_set_item(self.handle.as_ptr(), item, v.as_ptr().cast()) };
        self.check("pam_set_item", rc)
    }

    pub fn putenv(&mut self, name: &str, value: &str) -> Result<(), String> {
        let nv = CString::new(format!("{name}={value}"))
            .map_err(|_| format!("PAM environment {name} contains NUL"))?;
        // SAFETY: libpam copies the string; the handle is live.
        let rc = unsafe { pam_putenv(self.handle.as_ptr(), nv.as_ptr()) };
        self.check(&format!("pam_putenv({name})"), rc)
    }

    /// The PAM environment (`pam_getenvlist`), as UTF-8 pairs (others are skipped).
    pub fn envlist(&mut self) -> Vec<(String, String)> {
        // SAFETY: the handle is live; the result is a malloc'd NULL-terminated array of
        // malloc'd strings that the caller frees, which this does, each once.
        let list = unsafe { pam_getenvlist(self.handle.as_ptr()) };
        let mut out = Vec::new();
        if list.is_null() {
            return out;
        }
        let mut i = 0;
        loop {
            // SAFETY: within the NULL-terminated array.
            let item = unsafe { *list.add(i) };
            if item.is_null() {
                break;
            }
            // SAFETY: each entry is a NUL-terminated string.
            if let Ok(s) = unsafe { CStr::from_ptr(item) }.to_str()
                && let Some((k, v)) = s.split_once('=')
            {
                out.push((k.to_string(), v.to_string()));
            }
            // SAFETY: malloc'd by libpam, freed once.
            unsafe { libc::free(item.cast()) };
            i += 1;
        }
        // SAFETY: malloc'd by libpam, freed once.
        unsafe { libc::free(list.cast()) };
        out
    }

    /// PAM_USER as the modules left it (`pam_get_item`), lossily as UTF-8; `None` when it is
    /// not set.
    pub fn user(&self) -> Result<Option<String>, String> {
        Ok(self
            .user_bytes()?
            .map(|u| String::from_utf8_lossy(&u).into_owned()))
    }

    fn user_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: the handle is live and `item` a valid out-pointer; libpam points it to its
        // own copy of the item (or leaves it NULL), which is copied out before any other call.
        let rc = unsafe { pam_get_item(self.handle.as_ptr(), PAM_USER, &mut item) };
        if rc != PAM_SUCCESS {
            return Err(format!("pam_get_item(PAM_USER) failed ({rc})"));
        }
        if item.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-NULL PAM_USER is a NUL-terminated string owned by libpam.
        let user = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        Ok(Some(user.to_bytes().to_vec()))
    }

    /// `pam_authenticate`: the auth stack (which asks through the conversation). The user
    /// must still be the one the transaction was started for: a module that changed PAM_USER
    /// (to map a login name, or maliciously) would have authenticated someone else, so that is
    /// refused, as sudo-rs refuses it.
    pub fn authenticate(&mut self, flags: c_int) -> Result<(), String> {
        // SAFETY: the handle is live.
        let rc = unsafe { pam_authenticate(self.handle.as_ptr(), flags) };
        self.check("pam_authenticate", rc)?;
        self.check_user("pam_authenticate")
    }

    /// Refuse (as `PAM_AUTH_ERR`) when PAM_USER is no longer the user the transaction was
    /// started for.
    pub fn check_user(&mut self, after: &str) -> Result<(), String> {
        let now = self.user_bytes()?;
        // byte for byte: a name that is not UTF-8 is another name
        if now.as_deref() == Some(self.user.as_bytes()) {
            return Ok(());
        }
        self.last = PAM_AUTH_ERR;
        Err(format!(
            "{after}: a module changed PAM_USER from {:?} to {}: refused",
            self.user,
            now.map_or_else(
                || "nothing".to_string(),
                |u| format!("{:?}", String::from_utf8_lossy(&u))
            )
        ))
    }

    pub fn acct_mgmt(&mut self, flags: c_int) -> Result<(), String> {
        // SAFETY: the handle is live.
        let rc = unsafe { pam_acct_mgmt(self.handle.as_ptr(), flags) };
        self.check("pam_acct_mgmt", rc)
    }

    pub fn setcred(&mut self, flags: c_int) -> Result<(), String> {
        // SAFETY: the handle is live.
        let rc = unsafe { pam_setcred(self.handle.as_ptr(), flags) };
        self.check("pam_setcred", rc)
    }

    pub fn open_session(&mut self, flags: c_int) -> Result<(), String> {
        // SAFETY: the handle is live.
        let rc = unsafe { pam_open_session(self.handle.as_ptr(), flags) };
        self.check("pam_open_session", rc)
    }

    pub fn close_session(&mut self, flags: c_int) -> Result<(), String> {
        // SAFETY: the handle is live.
        let rc = unsafe { pam_close_session(self.handle.as_ptr(), flags) };
        self.check("pam_close_session", rc)
    }
}

impl Drop for Pam {
    fn drop(&mut self) {
        // SAFETY: the handle from pam_start, ended exactly once; the conversation boxes are
        // dropped after this (fields drop after Drop::drop).
        unsafe { pam_end(self.handle.as_ptr(), self.last) };
    }
}
