//! pam_hpccert.so: bearer-token authentication (`auth`) and the account check (`account`) of
//! hpccert for any PAM service. A thin shell: the PAM entry points turn libpam's handle into
//! a [`hpccert_core::host::pam::PamHandle`] and call [`hpccert_core::host::pam`], where the logic lives
//! and is tested. See `packaging/pam.d/README` for the stack lines and the options.
//!
//! Every entry point catches panics: a panic in `auth` is `PAM_AUTH_ERR`, elsewhere
//! `PAM_SYSTEM_ERR`, never a success. The module opens no socket, starts no runtime and
//! writes no file (hpccert-core is built without its `fetch` feature).
//!
//! libpam is reached through pam-bindings (the handle, items, conversation, module data) and
//! a small extension of it for what that crate does not bind (`src/pam_ext.rs`). The entry points
//! are this crate's own rather than pam-bindings' `pam_hooks!`, which would also export
//! `pam_sm_chauthtok` and turn a panic or a malformed argument vector into `PAM_ABORT`
//! (docs/ARCHITECTURE.md, "Foreign interfaces").
//!
//! This crate is the FFI edge between libpam and Rust: calling libpam and being called by it
//! cannot be done without `unsafe`. The workspace denies `unsafe_code`; this crate root
//! allows it, every block carries a `// SAFETY:` comment, and nothing else is here.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod libpam;
mod pam_ext;

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use hpccert_core::host::pam::{self as logic, LogLevel, PamCode, PamHandle as _, SystemView};
use pam::module::PamHandle as RawPamHandle;

use crate::libpam::LibPam;

/// The module arguments as C strings; `None` when the vector is malformed.
///
/// # Safety
/// `argv` points to `argc` pointers to NUL-terminated strings that outlive `'a`.
unsafe fn arguments<'a>(argc: c_int, argv: *const *const c_char) -> Option<Vec<&'a CStr>> {
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

/// Run `call` with libpam's handle and the module arguments. A null handle, a malformed
/// argument vector or a panic gives `on_failure`.
///
/// # Safety
/// `pamh`, `argc` and `argv` are what libpam passed to a `pam_sm_*` function.
unsafe fn entry(
    pamh: *mut RawPamHandle,
    argc: c_int,
    argv: *const *const c_char,
    on_failure: PamCode,
    call: impl FnOnce(&mut LibPam<'_>, &[&CStr]) -> PamCode,
) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libpam passes its live handle (null is refused here), valid for the whole
        // call; this call is its only user on this thread while it runs.
        let Some(pamh) = (unsafe { pamh.as_mut() }) else {
            return on_failure;
        };
        let mut handle = LibPam::new(pamh);
        // SAFETY: libpam passes `argc` argument strings in `argv`, valid for the whole call.
        let Some(args) = (unsafe { arguments(argc, argv) }) else {
            handle.syslog(LogLevel::Error, "malformed module arguments: refusing");
            return on_failure;
        };
        call(&mut handle, &args)
    }));
    match outcome {
        Ok(code) => code.raw(),
        Err(payload) => {
            // dropping a panic payload may panic again: leak it instead (this never happens
            // in a working module, and a leak beats unwinding into C)
            std::mem::forget(payload);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: as above; the reference of the panicked call is gone (unwound).
                if let Some(pamh) = unsafe { pamh.as_mut() } {
                    LibPam::new(pamh).syslog(
                        LogLevel::Error,
                        &format!("internal error (panic): refusing ({on_failure})"),
                    );
                }
            }));
            on_failure.raw()
        }
    }
}

/// `auth`: verify a bearer token and check that it maps to PAM_USER.
///
/// # Safety
/// Called by libpam with its handle and the stack line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut RawPamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: the arguments are libpam's, passed on unchanged.
    unsafe {
        entry(pamh, argc, argv, PamCode::AuthErr, |h, args| {
            logic::authenticate(h, args, &SystemView::current())
        })
    }
}

/// `auth` (credentials): nothing to establish; see [`hpccert_core::host::pam::setcred`].
///
/// # Safety
/// Called by libpam with its handle and the stack line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut RawPamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: the arguments are libpam's, passed on unchanged.
    unsafe {
        entry(pamh, argc, argv, PamCode::SystemErr, |h, args| {
            logic::setcred(h, args)
        })
    }
}

/// `account`: the identity this module authenticated may use PAM_USER.
///
/// # Safety
/// Called by libpam with its handle and the stack line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut RawPamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: the arguments are libpam's, passed on unchanged.
    unsafe {
        entry(pamh, argc, argv, PamCode::SystemErr, |h, args| {
            logic::account(h, args, &SystemView::current())
        })
    }
}

/// `session`: nothing to do.
///
/// # Safety
/// Called by libpam; the arguments are not used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    _pamh: *mut RawPamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PamCode::Ignore.raw()
}

/// `session`: nothing to do.
///
/// # Safety
/// Called by libpam; the arguments are not used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    _pamh: *mut RawPamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PamCode::Ignore.raw()
}

#[cfg(test)]
mod tests {
    //! The FFI layer against the real libpam: a handle from `pam_start_confdir` with a private
    //! configuration directory (nothing of /etc/pam.d is read).
    use super::*;
    use hpccert_core::host::pam::Secret;
    use std::ffi::{CString, c_void};

    // the application's side of the conversation (`<security/_pam_types.h>`), which
    // pam-bindings, a crate for modules, does not offer
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

    /// Test failures as values: no unwrap in this crate, not even in its tests.
    type TestResult = Result<(), String>;

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> Result<T, String> {
        r.map_err(|e| format!("{e:?}"))
    }

    unsafe extern "C" {
        fn pam_start_confdir(
            service: *const c_char,
            user: *const c_char,
            conv: *const PamConv,
            confdir: *const c_char,
            pamh: *mut *mut RawPamHandle,
        ) -> c_int;
        fn pam_end(pamh: *mut RawPamHandle, status: c_int) -> c_int;
    }

    /// Answers every prompt with "answer to <prompt>" (malloc'd, as libpam requires).
    unsafe extern "C" fn conversation(
        num_msg: c_int,
        msg: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        _appdata: *mut c_void,
    ) -> c_int {
        assert_eq!(num_msg, 1);
        // SAFETY: libpam-style call with one message; the response array is malloc'd and
        // handed to the module, which frees it.
        unsafe {
            let m = &**msg;
            assert_eq!(m.msg_style, 1, "echo off");
            let prompt = CStr::from_ptr(m.msg).to_string_lossy();
            let Ok(answer) = CString::new(format!("answer to {prompt}")) else {
                return 19; // PAM_CONV_ERR
            };
            let r = libc::calloc(1, std::mem::size_of::<PamResponse>()).cast::<PamResponse>();
            (*r).resp = libc::strdup(answer.as_ptr());
            *resp = r;
        }
        0
    }

    /// Answers with a response whose string is null (what pamtester's conversation does when
    /// its input is closed).
    unsafe extern "C" fn no_answer(
        _num_msg: c_int,
        _msg: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        _appdata: *mut c_void,
    ) -> c_int {
        // SAFETY: libpam-style call with one message; the zeroed response array is malloc'd
        // and handed to the module, which frees it.
        unsafe {
            *resp = libc::calloc(1, std::mem::size_of::<PamResponse>()).cast::<PamResponse>();
        }
        0
    }

    /// Claims success but hands back no response array at all.
    unsafe extern "C" fn no_responses(
        _num_msg: c_int,
        _msg: *mut *const PamMessage,
        _resp: *mut *mut PamResponse,
        _appdata: *mut c_void,
    ) -> c_int {
        0
    }

    struct Pam {
        pamh: *mut RawPamHandle,
        _conv: Box<PamConv>,
        _dir: tempfile::TempDir,
    }

    impl Pam {
        fn start(conv: Option<ConvFn>) -> Result<Self, String> {
            let dir = ok(tempfile::tempdir())?;
            ok(std::fs::write(
                dir.path().join("hpccert-test"),
                "auth required pam_deny.so\n",
            ))?;
            let conv = Box::new(PamConv {
                conv,
                appdata_ptr: std::ptr::null_mut(),
            });
            let confdir = ok(CString::new(dir.path().as_os_str().as_encoded_bytes()))?;
            let mut pamh = std::ptr::null_mut();
            // SAFETY: valid C strings and out pointer; the conversation outlives the handle.
            let rc = unsafe {
                pam_start_confdir(
                    c"hpccert-test".as_ptr(),
                    c"alice".as_ptr(),
                    &*conv,
                    confdir.as_ptr(),
                    &mut pamh,
                )
            };
            assert_eq!(rc, 0);
            Ok(Self {
                pamh,
                _conv: conv,
                _dir: dir,
            })
        }
        fn handle(&mut self) -> Result<LibPam<'_>, String> {
            // SAFETY: a live handle from pam_start, borrowed from `self` for the result's life.
            let pamh = unsafe { self.pamh.as_mut() };
            pamh.map(LibPam::new)
                .ok_or_else(|| "null handle".to_string())
        }
    }

    impl Drop for Pam {
        fn drop(&mut self) {
            // SAFETY: the handle from pam_start, ended once (runs the data cleanups).
            unsafe { pam_end(self.pamh, 0) };
        }
    }

    /// `entry` as libpam would call it.
    fn call(
        pamh: *mut RawPamHandle,
        argv: &[*const c_char],
        argc: c_int,
        on_failure: PamCode,
        f: impl FnOnce(&mut LibPam<'_>, &[&CStr]) -> PamCode,
    ) -> c_int {
        let argv = if argv.is_empty() {
            std::ptr::null()
        } else {
            argv.as_ptr()
        };
        // SAFETY: the tests pass a live handle (or null, which `entry` checks) and an argument
        // vector with at least `argc` entries (or null, which `entry` checks).
        unsafe { entry(pamh, argc, argv, on_failure, f) }
    }

    #[test]
    fn panics_and_bad_arguments_are_refusals() -> TestResult {
        let pam = Pam::start(Some(conversation))?;
        let debug = [c"debug".as_ptr()];
        let boom = |_: &mut LibPam<'_>, _: &[&CStr]| -> PamCode { panic!("boom") };
        assert_eq!(call(pam.pamh, &debug, 1, PamCode::AuthErr, boom), 7);
        assert_eq!(call(pam.pamh, &[], 0, PamCode::SystemErr, boom), 4);
        let never = |_: &mut LibPam<'_>, _: &[&CStr]| PamCode::Success;
        assert_eq!(
            call(std::ptr::null_mut(), &[], 0, PamCode::AuthErr, never),
            7
        );
        assert_eq!(call(pam.pamh, &debug, -1, PamCode::AuthErr, never), 7);
        assert_eq!(call(pam.pamh, &[], 1, PamCode::AuthErr, never), 7);
        let with_null = [c"debug".as_ptr(), std::ptr::null()];
        assert_eq!(call(pam.pamh, &with_null, 2, PamCode::AuthErr, never), 7);
        let seen = call(pam.pamh, &debug, 1, PamCode::AuthErr, |_, a| {
            assert_eq!(a, [c"debug"]);
            PamCode::Ignore
        });
        assert_eq!(seen, PamCode::Ignore.raw());

        // the real entry points
        let bogus = [c"bogus".as_ptr()];
        // SAFETY: a live handle and a one-element argument vector.
        let code = unsafe { pam_sm_authenticate(pam.pamh, 0, 1, bogus.as_ptr()) };
        assert_eq!(code, PamCode::ServiceErr.raw());
        // SAFETY: a live handle and no arguments.
        let code = unsafe { pam_sm_setcred(pam.pamh, 0, 0, std::ptr::null()) };
        assert_eq!(code, PamCode::Success.raw());
        // SAFETY: as above.
        let code = unsafe { pam_sm_open_session(pam.pamh, 0, 0, std::ptr::null()) };
        assert_eq!(code, PamCode::Ignore.raw());
        Ok(())
    }

    #[test]
    fn handle_calls_through_libpam() -> TestResult {
        let mut pam = Pam::start(Some(conversation))?;
        let mut h = pam.handle()?;
        assert_eq!(ok(h.user())?, "alice");

        // PAM_AUTHTOK is readable and settable only from inside a module call (libpam refuses
        // it to the application); tests/tests/pam_module.rs covers it under pam_wrapper
        assert_eq!(h.authtok().unwrap_err().code, Some(29));
        assert_eq!(
            h.set_authtok(&Secret::from("t")).unwrap_err().code,
            Some(29)
        );
        assert_eq!(h.set_authtok(&Secret::from("a\0b")).unwrap_err().code, None);

        let answer = ok(h.prompt_secret("Access token: "))?;
        assert_eq!(answer, Some(Secret::from("answer to Access token: ")));

        assert_eq!(h.getenv("HPCCERT_IDENTITY"), None);
        ok(h.putenv("HPCCERT_IDENTITY", Some("s (issuer i)")))?;
        assert_eq!(
            h.getenv("HPCCERT_IDENTITY").as_deref(),
            Some("s (issuer i)")
        );
        ok(h.putenv("HPCCERT_IDENTITY", None))?;
        assert_eq!(h.getenv("HPCCERT_IDENTITY"), None);
        assert!(h.putenv("HPCCERT_IDENTITY", Some("a\0b")).is_err());

        // module data, like PAM_AUTHTOK, exists only inside module calls; under pam_wrapper
        // the account check succeeding after auth shows the round trip
        assert_eq!(h.data("pam_hpccert_token"), None);
        let e = h
            .set_data("pam_hpccert_token", Some(&Secret::from("x")))
            .unwrap_err();
        assert_eq!(e.code, Some(4));
        assert_eq!(e.reason, "System error", "libpam's text for the code");
        h.syslog(LogLevel::Debug, "pam_hpccert unit test");
        Ok(())
    }

    #[test]
    fn no_conversation_is_a_conversation_error() -> TestResult {
        let mut pam = Pam::start(None)?;
        let mut h = pam.handle()?;
        let Err(e) = h.prompt_secret("Access token: ") else {
            return Err("a prompt without a conversation succeeded".into());
        };
        assert_eq!(e.call, "conversation");
        assert_eq!(e.code, Some(19));
        Ok(())
    }

    #[test]
    fn answers_that_are_not_there() -> TestResult {
        // a response without a string: no answer, which auth refuses as "no token"
        {
            let mut pam = Pam::start(Some(no_answer))?;
            let mut h = pam.handle()?;
            assert_eq!(ok(h.prompt_secret("Access token: "))?, None);
        }

        // a success without any response array breaks the conversation's contract:
        // pam-bindings makes it PAM_CONV_ERR (before the move onto pam-bindings this module
        // took it as no answer, a PAM_AUTH_ERR refusal)
        let mut pam = Pam::start(Some(no_responses))?;
        let mut h = pam.handle()?;
        let Err(e) = h.prompt_secret("Access token: ") else {
            return Err("a conversation without responses answered".into());
        };
        assert_eq!((e.call, e.code), ("conversation", Some(19)));
        Ok(())
    }
}
