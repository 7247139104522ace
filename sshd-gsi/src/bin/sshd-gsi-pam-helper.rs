//! `sshd-gsi-pam-helper serve SERVICE`: the PAM broker sshd-gsi starts (as root) and keeps:
//! it loads the PAM stack once and forks a child for the account stack of each login and as
//! the parent of each session process. Not a user command: it takes its jobs on fd 3 from
//! sshd-gsi. See `src/pam.rs` and `src/pam_helper.rs`.
//!
//! A program of its own, built from the few modules it needs, so that each open session costs
//! the pages its child writes, not a copy of the server.

#[allow(dead_code)] // the helper applies the rules the server made; it makes none
#[path = "../confine.rs"]
mod confine;
#[path = "../pam_helper.rs"]
mod pam_helper;
#[allow(dead_code)] // the server's half of the protocol (framing the request) is unused here
#[path = "../pam_proto.rs"]
mod pam_proto;
#[allow(dead_code)] // the helper needs the account lookup and privilege drop, not the PTY code
#[path = "../spawn.rs"]
mod spawn;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [serve, service] if serve == "serve" => pam_helper::broker_main(service),
        _ => {
            eprintln!(
                "sshd-gsi-pam-helper: started by sshd-gsi only (usage: sshd-gsi-pam-helper serve SERVICE, jobs on fd 3)"
            );
            ExitCode::from(2)
        }
    }
}
