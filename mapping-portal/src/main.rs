//! mapping-portal: users link their CILogon identity and DN to their local account.
//!
//! Not built yet (issue #7). The binary refuses to start rather than pretend to serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("mapping-portal: not built yet (see issue #7)");
    ExitCode::from(2)
}
