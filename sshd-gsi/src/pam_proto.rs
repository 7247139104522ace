//! What sshd-gsi and its PAM helper (`sshd-gsi-pam-helper`, see `sshd_gsi::pam`) say to each
//! other: the request the server sends as JSON on the helper's fd 3. Shared by both binaries.

use std::io::Write;
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// The longest request the helper reads (a PEM chain and a few environment variables).
pub const MAX_REQUEST: usize = 1 << 20;

/// How long the account stack may run before the helper ends itself (SIGALRM) and the login
/// is refused.
pub const ACCOUNT_TIMEOUT_SECS: u32 = 30;
/// How long setting up credentials and opening a session (pam_mkhomedir, pam_systemd) may
/// take before the helper ends itself.
pub const SESSION_TIMEOUT_SECS: u32 = 60;

/// The request as the server writes it on the job socket: a 4-byte big-endian length, then
/// the JSON. The socket stays open both ways: the server later sends `signal N` lines for the
/// session's process, the helper `log`, `ok`, `error` and `exit` lines.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Read one framed request (see [`frame`]).
pub fn read_frame(mut r: impl std::io::Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(format!("request of {len} bytes (at most {MAX_REQUEST})"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    Ok(body)
}

/// What the server asks the broker (`sshd-gsi-pam-helper serve`) for, one datagram each on
/// its fd 3 with the descriptors attached: `account` (the job socket) or `session` (the job
/// socket, then the session's stdin, stdout and stderr).
pub const JOB_ACCOUNT: &[u8] = b"account";
pub const JOB_SESSION: &[u8] = b"session";

/// The raw wait status (as `waitpid` gives it) of a process that exited with `code`, or was
/// killed by `signal` (with a core dump when `core`).
pub fn wait_status(code: Option<i32>, signal: Option<(i32, bool)>) -> i32 {
    match (code, signal) {
        (Some(c), _) => (c & 0xff) << 8,
        (None, Some((s, core))) => (s & 0x7f) | if core { 0x80 } else { 0 },
        (None, None) => 255 << 8,
    }
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
    /// The account as the server resolved it at login (no second NSS lookup in the helper).
    #[serde(default)]
    pub account: Option<AccountRecord>,
}

/// An account's passwd entry and groups, as `spawn::Account` holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
    pub shell: std::path::PathBuf,
    pub groups: Vec<u32>,
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
