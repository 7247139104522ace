//! PAM around logins and sessions, as sshd's `UsePAM yes`: the account stack at every login,
//! the session stack (with credentials) around every session process.
//!
//! PAM modules never run inside the server. sshd-gsi starts itself again as a helper
//! (`/proc/self/exe --pam-helper account|session`, as root):
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
#![allow(unsafe_code)] // the pre-exec hooks: each block says why it is sound

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::libpam::{self, Conversation, Pam};
use crate::spawn::{self, Account};

/// The first argument that makes `sshd-gsi` a PAM helper.
pub const HELPER_ARG: &str = "--pam-helper";

/// Variables the server puts into the PAM environment and never passes on from it (a
/// module could otherwise forge them for the session).
const HANDOVER_PREFIX: &str = "HPCCERT_";

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
    pub fn new(mode: &str) -> Result<Self, String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("PAM helper: socketpair: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd();
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command.arg0("sshd-gsi").arg(HELPER_ARG).arg(mode);
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

    /// Start the helper, send the request and wait for its first answer (`ok` or the error);
    /// later `log` lines are logged until the helper ends.
    pub async fn start(
        mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<tokio::process::Child, String> {
        let mut child = self
            .command
            .spawn()
            .map_err(|e| format!("cannot start the PAM helper: {e}"))?;
        drop(self.theirs.take());
        let body = serde_json::to_vec(request).map_err(|e| format!("PAM helper: {e}"))?;
        let answer = tokio::time::timeout(timeout, converse(self.ours, &body)).await;
        match answer {
            Ok(Ok(())) => Ok(child),
            Ok(Err(e)) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
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

/// Send the request, read answers until `ok` or `error`; a task logs the helper's later lines.
async fn converse(sock: UnixStream, body: &[u8]) -> Result<(), String> {
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
    loop {
        match lines.next_line().await {
            Ok(Some(l)) if l == "ok" => break,
            Ok(Some(l)) => match l.strip_prefix("error ") {
                Some(e) => return Err(e.to_string()),
                None => log_line(&l),
            },
            Ok(None) => return Err("PAM helper ended without an answer".into()),
            Err(e) => return Err(format!("PAM helper: {e}")),
        }
    }
    // the helper may report more (closing the session) while the session runs
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            log_line(&l);
        }
    });
    Ok(())
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
pub async fn account(request: &Request) -> Result<(), String> {
    let mut helper = HelperCommand::new("account")?;
    helper
        .command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = helper.start(request, ACCOUNT_TIMEOUT).await?;
    match child.wait().await {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("PAM helper failed: {s}")),
        Err(e) => Err(format!("PAM helper: {e}")),
    }
}

/// A helper that opens the session and then runs `request.run`; stdio is the caller's to set.
pub fn session_command() -> Result<HelperCommand, String> {
    HelperCommand::new("session")
}

/// Start a session helper prepared by [`session_command`].
pub async fn start_session(
    helper: HelperCommand,
    request: &Request,
) -> Result<tokio::process::Child, String> {
    helper.start(request, SESSION_TIMEOUT).await
}

// ---------------------------------------------------------------------------------------------
// helper side

/// `sshd-gsi --pam-helper MODE`: read the request on fd 3, run the stacks, answer on fd 3.
pub fn helper_main(mode: &str) -> ExitCode {
    // SAFETY: fd 3 is the socket the server set up before exec (HelperCommand::new); nothing
    // else in this process owns it.
    let sock = unsafe { UnixStream::from_raw_fd(3) };
    let reporter = Reporter { sock };
    let mut body = Vec::new();
    if let Err(e) = (&reporter.sock).take(1 << 20).read_to_end(&mut body) {
        reporter.error(&format!("cannot read the request: {e}"));
        return ExitCode::from(1);
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            reporter.error(&format!("bad request: {e}"));
            return ExitCode::from(1);
        }
    };
    match mode {
        "account" => match account_stack(&request, &reporter) {
            Ok(()) => {
                reporter.ok();
                ExitCode::SUCCESS
            }
            Err(e) => {
                reporter.error(&e);
                ExitCode::from(1)
            }
        },
        "session" => session_stack(&request, reporter),
        other => {
            reporter.error(&format!("unknown helper mode {other:?}"));
            ExitCode::from(2)
        }
    }
}

/// Answers to the server.
struct Reporter {
    sock: UnixStream,
}

impl Reporter {
    fn line(&self, l: &str) {
        let one_line: String = l
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = (&self.sock).write_all(format!("{one_line}\n").as_bytes());
    }
    fn ok(&self) {
        self.line("ok");
    }
    fn error(&self, e: &str) {
        self.line(&format!("error {e}"));
    }
    fn log(&self, level: &str, m: &str) {
        self.line(&format!("log {level} {m}"));
    }
}

fn context(request: &Request, reporter: &Reporter, terminal: bool) -> Result<Pam, String> {
    let conversation = Conversation {
        reporter: reporter
            .sock
            .try_clone()
            .map_err(|e| format!("cannot duplicate the helper socket: {e}"))?,
        terminal,
    };
    let mut pam = Pam::start(&request.service, &request.user, conversation)?;
    pam.set_item(libpam::PAM_RHOST, &request.rhost)?;
    pam.set_item(libpam::PAM_TTY, request.tty.as_deref().unwrap_or("ssh"))?;
    for (k, v) in &request.handover {
        pam.putenv(k, v)?;
    }
    Ok(pam)
}

fn account_stack(request: &Request, reporter: &Reporter) -> Result<(), String> {
    let mut pam = context(request, reporter, false)?;
    pam.acct_mgmt(libpam::PAM_SILENT)
        .map_err(|e| format!("PAM account check for {} refused: {e}", request.user))
}

fn session_stack(request: &Request, reporter: Reporter) -> ExitCode {
    let Some(run) = &request.run else {
        reporter.error("a session request without a process");
        return ExitCode::from(1);
    };
    let account = match Account::lookup(&request.user) {
        Ok(a) => a,
        Err(e) => {
            reporter.error(&e);
            return ExitCode::from(1);
        }
    };
    let mut pam = match context(request, &reporter, run.pty) {
        Ok(c) => c,
        Err(e) => {
            reporter.error(&e);
            return ExitCode::from(1);
        }
    };
    // as sshd when PAM did not authenticate the user: credentials are established if the
    // auth stack can (pam_deny in it cannot), and their failure does not stop the session
    let credentials = pam
        .setcred(libpam::PAM_ESTABLISH_CRED | libpam::PAM_SILENT)
        .map_err(|e| reporter.log("debug", &format!("{e} (ignored, as by sshd)")))
        .is_ok();
    if let Err(e) = pam.open_session(libpam::PAM_SILENT) {
        reporter.error(&format!(
            "PAM session for {} could not be opened: {e}",
            request.user
        ));
        if credentials {
            let _ = pam.setcred(libpam::PAM_DELETE_CRED | libpam::PAM_SILENT);
        }
        return ExitCode::from(1);
    }
    if credentials {
        // modules differ on whether credentials come before or after the session (sshd
        // also reinitialises them here)
        let _ = pam.setcred(libpam::PAM_REINITIALIZE_CRED | libpam::PAM_SILENT);
    }
    // the process's environment: the server's, then PAM's (which wins, as under sshd), but
    // never a handover variable from PAM
    let mut env = run.env.clone();
    for (k, v) in pam.envlist() {
        if k.starts_with(HANDOVER_PREFIX) {
            continue;
        }
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    }
    let close = |pam: &mut Pam| {
        if let Err(e) = pam.close_session(libpam::PAM_SILENT) {
            reporter.log(
                "warn",
                &format!(
                    "PAM session for {} did not close cleanly: {e}",
                    request.user
                ),
            );
        }
        if credentials {
            let _ = pam.setcred(libpam::PAM_DELETE_CRED | libpam::PAM_SILENT);
        }
    };
    let signals = forwarded_signals();
    if let Err(e) = signals.thread_block() {
        reporter.error(&format!("cannot block signals: {e}"));
        close(&mut pam);
        return ExitCode::from(1);
    }
    let mut cmd = std::process::Command::new(&run.program);
    if let Some(a0) = &run.argv0 {
        cmd.arg0(a0);
    }
    cmd.args(&run.args).env_clear().envs(env);
    let child = spawn::as_account(&mut cmd, &account, run.pty)
        .and_then(|()| {
            cmd.spawn()
                .map_err(|e| format!("cannot start {}: {e}", run.program))
        })
        .and_then(|c| {
            i32::try_from(c.id())
                .map(nix::unistd::Pid::from_raw)
                .map_err(|e| e.to_string())
        });
    let pid = match child {
        Ok(pid) => pid,
        Err(e) => {
            reporter.error(&e);
            close(&mut pam);
            return ExitCode::from(1);
        }
    };
    reporter.ok();
    let status = wait_forwarding(pid, &signals);
    // the session's output ends with its process, not with the PAM close below
    release_stdio();
    close(&mut pam);
    drop(pam);
    end_like(status)
}

fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE, SIGCONT,
    ] {
        set.add(s);
    }
    set
}

/// Wait for the session process, passing every other signal on to its process group.
fn wait_forwarding(
    pid: nix::unistd::Pid,
    signals: &nix::sys::signal::SigSet,
) -> nix::sys::wait::WaitStatus {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(pid, 255),
        }
        match signals.wait() {
            Ok(nix::sys::signal::Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = nix::sys::signal::killpg(pid, sig);
            }
        }
    }
}

/// Point stdin, stdout and stderr at /dev/null so the server sees the session's output end.
fn release_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded helper; the
            // source is a valid open file.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

/// End the helper the way the session process ended, so the server reports its exit status
/// or signal to the client.
fn end_like(status: nix::sys::wait::WaitStatus) -> ExitCode {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        WaitStatus::Signaled(_, sig, _) => {
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            // SAFETY: restoring the default disposition of a signal has no memory effects.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
            let mut only = nix::sys::signal::SigSet::empty();
            only.add(sig);
            let _ = only.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            ExitCode::from(u8::try_from(128 + sig as i32).unwrap_or(255))
        }
        _ => ExitCode::from(255),
    }
}
