//! PAM around logins and sessions, as sshd's `UsePAM yes`: the account stack at every login,
//! the session stack (with credentials) around every session process.
//!
//! PAM modules never run inside the server. sshd-gsi starts a small helper program,
//! `sshd-gsi-pam-helper account|session` (installed beside it; `pam_helper`), as
//! root:
//!
//! * **account**, at login, once the credential is verified and mapped: `pam_acct_mgmt` for the
//!   account, with `PAM_RHOST` and the verified identity in the PAM environment
//!   (`HPCCERT_*`, see [`crate::session`]); a refusal refuses the login with PAM's reason.
//! * **session**, as the parent of every session process (exec, shell, subsystem): it opens
//!   the session (`pam_setcred` + `pam_open_session`), starts the process as the account with
//!   PAM's environment added, forwards signals to it, waits, closes the session and ends with
//!   the process's exit status or signal.
//!
//! Why a process and not a thread: modules block (pam_systemd asks logind, pam_mkhomedir copies
//! files), some leak or keep global state, and pam_limits, pam_loginuid and pam_systemd act on
//! the calling process and its children, so the session's process must descend from the
//! process that opened the session, as under sshd. The server is never blocked: it talks to
//! the helper over a socket pair on the helper's fd 3 (the request as JSON, then lines back:
//! `ok`, `error TEXT`, `log LEVEL TEXT`) and logs what the helper reports.
//!
//! One PAM session per session channel: a connection with several channels opens several PAM
//! sessions (as cron does per job), where OpenSSH opens one per connection.
#![allow(unsafe_code)] // the pre-exec hook: the block says why it is sound

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::pam_proto::{Request, Run};

/// The helper's file name.
pub const HELPER_NAME: &str = "sshd-gsi-pam-helper";
/// Where the packages install it.
pub const INSTALLED_HELPER: &str = "/usr/libexec/hpccert/sshd-gsi-pam-helper";

/// Where the helper is: `[sshd] pam_helper`, else beside this executable (a build tree), else
/// where the packages install it.
pub fn helper_path(configured: Option<&Path>) -> Result<PathBuf, String> {
    let candidates = match configured {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let mut c = Vec::new();
            if let Ok(exe) = std::env::current_exe() {
                c.push(exe.with_file_name(HELPER_NAME));
            }
            c.push(PathBuf::from(INSTALLED_HELPER));
            c
        }
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "[sshd] use_pam: the PAM helper is missing (looked for {}; set [sshd] pam_helper)",
                looked.join(", ")
            )
        })
}

/// Pass a client's `signal` request to a session's PAM helper (`pid`, not yet reaped by the
/// caller), which passes it on to the session's process group while that is not reaped;
/// SIGKILL, which the helper could not catch, travels as [`crate::pam_proto::kill_carrier`].
pub fn signal_helper(pid: nix::unistd::Pid, sig: nix::sys::signal::Signal) {
    let number = if sig == nix::sys::signal::Signal::SIGKILL {
        crate::pam_proto::kill_carrier()
    } else {
        sig as libc::c_int
    };
    // SAFETY: kill has no memory effects; `pid` is the caller's unreaped child.
    unsafe {
        libc::kill(pid.as_raw(), number);
    }
}

/// How long the account stack may take before the login is refused.
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a session may take (pam_mkhomedir, pam_systemd) before it fails.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// server side

/// A helper process being started: the command (stdio still to be set) and the server's end
/// of the socket pair.
pub struct HelperCommand {
    pub command: tokio::process::Command,
    ours: UnixStream,
    theirs: Option<OwnedFd>,
}

impl HelperCommand {
    /// `sshd-gsi --pam-helper MODE`, with fd 3 a socket to the server, in its own session,
    /// no other descriptor of the server inherited.
    pub fn new(helper: &Path, mode: &str) -> Result<Self, String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("PAM helper: socketpair: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut command = tokio::process::Command::new(helper);
        command.arg0(HELPER_NAME).arg(mode);
        command.kill_on_drop(false);
        // SAFETY: runs in the forked child before exec and calls only async-signal-safe
        // functions (close_range, dup2, fcntl, setsid) on descriptors open before the fork.
        unsafe {
            command.pre_exec(move || {
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) != 3 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::close_range(
                    4,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        Ok(Self {
            command,
            ours,
            theirs: Some(theirs),
        })
    }

    /// Start the helper, send the request and wait for its first answer (`ok`, with the
    /// session process's pid for a session, or the error); later `log` lines are logged until
    /// the helper ends.
    pub async fn start(
        mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(tokio::process::Child, Option<i32>), String> {
        let mut child = self
            .command
            .spawn()
            .map_err(|e| format!("cannot start the PAM helper: {e}"))?;
        drop(self.theirs.take());
        let body = serde_json::to_vec(request).map_err(|e| format!("PAM helper: {e}"))?;
        let answer = tokio::time::timeout(timeout, converse(self.ours, &body)).await;
        match answer {
            Ok(Ok(pid)) => Ok((child, pid)),
            Ok(Err(e)) => {
                // it ends by itself once it has undone what it set up (credentials)
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                Err(e)
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(format!("PAM did not answer within {} s", timeout.as_secs()))
            }
        }
    }
}

/// Send the request, read answers until `ok [PID]` or `error`; a task logs the helper's later
/// lines.
async fn converse(sock: UnixStream, body: &[u8]) -> Result<Option<i32>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let sock = sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(sock))
        .map_err(|e| format!("PAM helper: {e}"))?;
    let (read, mut write) = sock.into_split();
    write
        .write_all(body)
        .await
        .map_err(|e| format!("PAM helper: cannot send the request: {e}"))?;
    drop(write);
    let mut lines = tokio::io::BufReader::new(read).lines();
    let pid = loop {
        match lines.next_line().await {
            Ok(Some(l)) if l == "ok" => break None,
            Ok(Some(l)) if l.starts_with("ok ") => match l[3..].parse::<i32>() {
                Ok(pid) if pid > 1 => break Some(pid),
                _ => return Err(format!("PAM helper: bad answer {l:?}")),
            },
            Ok(Some(l)) => match l.strip_prefix("error ") {
                Some(e) => return Err(e.to_string()),
                None => log_line(&l),
            },
            Ok(None) => return Err("PAM helper ended without an answer".into()),
            Err(e) => return Err(format!("PAM helper: {e}")),
        }
    };
    // the helper may report more (closing the session) while the session runs
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            log_line(&l);
        }
    });
    Ok(pid)
}

fn log_line(l: &str) {
    match l.strip_prefix("log ").and_then(|r| r.split_once(' ')) {
        Some(("warn", m)) => tracing::warn!(target: "sshd_gsi::pam", "{m}"),
        Some(("info", m)) => tracing::info!(target: "sshd_gsi::pam", "{m}"),
        Some((_, m)) => tracing::debug!(target: "sshd_gsi::pam", "{m}"),
        None => {
            tracing::warn!(target: "sshd_gsi::pam", "unexpected line from the PAM helper: {l:?}")
        }
    }
}

/// The account stack for a login: `Ok` or PAM's refusal.
pub async fn account(helper: &Path, request: &Request) -> Result<(), String> {
    let mut helper = HelperCommand::new(helper, "account")?;
    helper
        .command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let (mut child, _) = helper.start(request, ACCOUNT_TIMEOUT).await?;
    match child.wait().await {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("PAM helper failed: {s}")),
        Err(e) => Err(format!("PAM helper: {e}")),
    }
}

/// A helper that opens the session and then runs `request.run`; stdio is the caller's to set.
pub fn session_command(helper: &Path) -> Result<HelperCommand, String> {
    HelperCommand::new(helper, "session")
}

/// Start a session helper prepared by [`session_command`]: the helper, and the pid of the
/// session's process (its process group), which signals go to.
pub async fn start_session(
    helper: HelperCommand,
    request: &Request,
) -> Result<(tokio::process::Child, i32), String> {
    match helper.start(request, SESSION_TIMEOUT).await? {
        (child, Some(pid)) => Ok((child, pid)),
        (mut child, None) => {
            let _ = child.start_kill();
            Err("PAM helper did not name the session's process".into())
        }
    }
}
