//! Shared helpers for the end-to-end tests against real peers.
//!
//! A test whose peer is missing skips with a printed reason, so that `cargo test` passes on a
//! bare machine; CI sets `HPCCERT_E2E_REQUIRED=1`, which turns every such skip into a failure.
#![forbid(unsafe_code)]
// Test support: a failed helper is a failed test.
#![allow(clippy::panic)]

use std::path::Path;
use std::process::Command;

/// Whether `program` can be run; when it cannot and peers are required, panic.
pub fn peer_available(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        let required = std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1");
        let msg = format!("{program} not found (Debian package {package})");
        assert!(!required, "{msg}, and HPCCERT_E2E_REQUIRED=1");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Run a command; return (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write `data` with the given mode.
pub fn write_mode(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{e}"));
}
