//! What sshd-gsi and its PAM helper (`sshd-gsi-pam-helper`, see `sshd_gsi::pam`) say to each
//! other: the request the server sends as JSON on the helper's fd 3. Shared by both binaries.

use std::io::Write;
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// The real-time signal the server sends a session's PAM helper to mean SIGKILL (which cannot
/// be caught and passed on): the helper kills the session's process group itself, then still
/// closes the PAM session. Every other signal is sent to the helper as it is and passed on.
pub fn kill_carrier() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Send one answer line to the server (`ok`, `error TEXT`, `log LEVEL TEXT`); control
/// characters become spaces, so no text (a PAM module's message) can forge another line.
pub fn send_line(sock: &UnixStream, line: &str) {
    let one_line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut w = sock;
    let _ = w.write_all(format!("{one_line}\n").as_bytes());
}

/// Variables the server puts into the PAM environment and never passes on from it (a
/// module could otherwise forge them for the session).
pub const HANDOVER_PREFIX: &str = "HPCCERT_";

/// What the server asks of a helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub service: String,
    pub user: String,
    /// `PAM_RHOST`: the client's address.
    pub rhost: String,
    /// `PAM_TTY`: the PTY's path, or `ssh` without one (as sshd).
    pub tty: Option<String>,
    /// Put into the PAM environment before the stacks run: the verified identity.
    pub handover: Vec<(String, String)>,
    /// For `session`: the process to run as the account.
    pub run: Option<Run>,
}

/// The session process the helper starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub program: String,
    pub argv0: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pty: bool,
    /// The Landlock confinement of a token session's sftp server (see `confine`).
    #[serde(default)]
    pub confine: Option<crate::confine::Confinement>,
}
