//! `sshd-gsi-pam-helper account|session`: the PAM helper sshd-gsi starts (as root) for the
//! account stack at each login and as the parent of each session process. Not a user
//! command: it reads its request on fd 3 from sshd-gsi. See `src/pam.rs` and `src/pam_helper.rs`.
//!
//! A program of its own, built from the few modules it needs, so that each open session costs
//! libpam, the PAM modules and this small program, not a copy of the server.

#[allow(dead_code)] // the helper applies the rules the server made; it makes none
#[path = "../confine.rs"]
mod confine;
#[path = "../pam_helper.rs"]
mod pam_helper;
#[path = "../pam_proto.rs"]
mod pam_proto;
#[allow(dead_code)] // the helper needs the account lookup and privilege drop, not the PTY code
#[path = "../spawn.rs"]
mod spawn;

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(mode) = std::env::args().nth(1) else {
        eprintln!(
            "sshd-gsi-pam-helper: started by sshd-gsi only (usage: sshd-gsi-pam-helper account|session, request on fd 3)"
        );
        return ExitCode::from(2);
    };
    pam_helper::helper_main(&mode)
}
