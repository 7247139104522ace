//! sshd-gsi: the SSH server on port 2222 (RFC 6187 X.509 and bearer-token logins).
//!
//! Not built yet: authentication and sessions arrive with issue #4. Until then the binary
//! refuses to start rather than pretend to serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "sshd-gsi: not built yet (see issue #4); use `gridmap-tool explain` to test decisions"
    );
    ExitCode::from(2)
}
