//! PAM around logins and sessions, as sshd's `UsePAM yes`: the account stack at every login,
//! the session stack (with credentials) around every session process.
//!
//! PAM modules never run inside the server. sshd-gsi starts one small helper program as root,
//! the **broker** `sshd-gsi-pam-helper serve SERVICE` (installed beside it; `pam_helper`),
//! which loads the service's stack once and forks a child per job:
//!
//! * **account**, at login, once the credential is verified and mapped: `pam_acct_mgmt` for the
//!   account, with `PAM_RHOST` and the verified identity in the PAM environment
//!   (`HPCCERT_*`, see [`crate::session`]); a refusal refuses the login with PAM's reason.
//! * **session**, as the parent of every session process (exec, shell, subsystem): it opens
//!   the session (`pam_setcred` + `pam_open_session`), starts the process as the account with
//!   PAM's environment added, passes signals on to it, reaps it, reports its wait status,
//!   then closes the session.
//!
//! Why processes and not threads: modules block (pam_systemd asks logind, pam_mkhomedir copies
//! files), some leak or keep global state, and pam_limits, pam_loginuid and pam_systemd act on
//! the calling process and its children, so the session's process must descend from the
//! process that opened the session, as under sshd. Why a broker that forks rather than a
//! program started per job: a child of the broker shares the loaded libpam and modules with it
//! page for page, so it starts in a fraction of a millisecond instead of a dynamic link of
//! thirty libraries, and an idle session costs only the pages its child wrote. A job that
//! blocks in a module blocks only its own child; the broker only forks.
//!
//! The server is never blocked: each job has its own socket pair (the child's end sent to the
//! broker with the job; the request as a framed JSON, then lines back: `ok [PID]`,
//! `error TEXT`, `log LEVEL TEXT`, `exit RAW`; and from the server `signal N`). A broker that
//! is gone (killed, crashed) is started again at the next job; the sessions it had forked go
//! on, since each child talks to the server on its own socket.
//!
//! The child that ran a login's account stack keeps its PAM handle and opens the login's first
//! session on it (as sshd uses one handle for both), so a login with one session costs one
//! fork. Each further session channel gets a child and a PAM session of its own: a connection
//! with several channels opens several PAM sessions (as cron does per job), where OpenSSH
//! opens one per connection.
#![allow(unsafe_code)] // the pre-exec hook: the block says why it is sound

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
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

/// How long the server waits for the account stack's answer (the helper ends itself after
/// [`crate::pam_proto::ACCOUNT_TIMEOUT_SECS`]).
const ACCOUNT_TIMEOUT: Duration =
    Duration::from_secs(crate::pam_proto::ACCOUNT_TIMEOUT_SECS as u64 + 5);
/// How long opening a session may take (pam_mkhomedir, pam_systemd) before it fails.
const SESSION_TIMEOUT: Duration =
    Duration::from_secs(crate::pam_proto::SESSION_TIMEOUT_SECS as u64 + 5);

// ---------------------------------------------------------------------------------------------
// server side

/// The broker of a running server: started when the engine loads, started again when it is
/// found gone. Dropping it (a configuration reload) ends it; its children live on.
pub struct Broker {
    program: PathBuf,
    service: String,
    running: std::sync::Mutex<Option<Running>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("program", &self.program)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A started broker: the process and the server's end of its job socket.
struct Running {
    child: Option<std::process::Child>,
    jobs: OwnedFd,
}

impl Drop for Running {
    fn drop(&mut self) {
        // closing the job socket ends the broker (it reads the end of the stream); it is
        // reaped on a thread of its own, so that nobody waits for it here
        let _ = nix::sys::socket::shutdown(self.jobs.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(mut child) = self.child.take() {
            let _ = std::thread::Builder::new()
                .name("pam-broker-reaper".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
    }
}

impl Broker {
    /// Start the broker for `service` (`program` is the helper, see [`helper_path`]).
    pub fn start(program: PathBuf, service: &str) -> Result<Self, String> {
        let running = Running::start(&program, service)?;
        Ok(Self {
            program,
            service: service.to_string(),
            running: std::sync::Mutex::new(Some(running)),
        })
    }

    /// Hand a job to the broker: its name and the descriptors the child gets (the job socket
    /// first). A broker that is gone is started again, once per job.
    fn submit(&self, job: &[u8], fds: &[RawFd]) -> Result<(), String> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last = String::new();
        for _attempt in 0..2 {
            if let Some(r) = running.as_mut()
                && let Some(ended) = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
            {
                tracing::warn!(target: "sshd_gsi::pam", "the PAM broker ended ({ended}): starting it again");
                *running = None;
            }
            if running.is_none() {
                *running = Some(Running::start(&self.program, &self.service)?);
            }
            let Some(r) = running.as_ref() else { continue };
            match sendmsg::<()>(
                r.jobs.as_raw_fd(),
                &[std::io::IoSlice::new(job)],
                &[ControlMessage::ScmRights(fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = e.to_string();
                    tracing::warn!(target: "sshd_gsi::pam", "cannot reach the PAM broker ({e}): starting it again");
                    *running = None;
                }
            }
        }
        Err(format!("PAM broker: {last}"))
    }

    /// Start a job and wait for its first answer (`ok`, with the session process's pid for a
    /// session, or the error). The broker's child gets `stdio` as its stdin, stdout and stderr
    /// (`/dev/null` without).
    async fn job(
        &self,
        request: &Request,
        stdio: Option<[&OwnedFd; 3]>,
        timeout: Duration,
    ) -> Result<(Option<i32>, JobSocket), String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("PAM helper: socketpair: {e}"))?;
        let mut fds = vec![theirs.as_raw_fd()];
        let name = match stdio {
            Some(s) => {
                fds.extend(s.iter().map(|fd| fd.as_raw_fd()));
                crate::pam_proto::JOB_SESSION
            }
            None => crate::pam_proto::JOB_ACCOUNT,
        };
        self.submit(name, &fds)?;
        drop(theirs);
        let body = serde_json::to_vec(request).map_err(|e| format!("PAM helper: {e}"))?;
        let mut sock = JobSocket::new(ours)?;
        match tokio::time::timeout(timeout, sock.converse(&body)).await {
            Ok(Ok(pid)) => Ok((pid, sock)),
            Ok(Err(e)) => Err(e),
            // the helper ends itself (its alarm) and closes what it set up
            Err(_) => Err(format!("PAM did not answer within {} s", timeout.as_secs())),
        }
    }

    /// The account stack for a login: the child that ran it (which waits to open the login's
    /// first session with the same PAM handle, as sshd does), or PAM's refusal.
    pub async fn account(&self, request: &Request) -> Result<AccountJob, String> {
        self.job(request, None, ACCOUNT_TIMEOUT)
            .await
            .map(|(_, sock)| AccountJob(sock))
    }

    /// Open a session and start `request.run` in it, with `stdio` (child ends: the server
    /// closes its copies once this returns): in the login's account child when it is given
    /// and still there, else in a new child.
    pub async fn session(
        &self,
        request: &Request,
        stdio: [&OwnedFd; 3],
        account: Option<AccountJob>,
    ) -> Result<Session, String> {
        if let Some(account) = account {
            match tokio::time::timeout(SESSION_TIMEOUT, account.session(request, stdio)).await {
                Ok(Ok((pid, sock))) => {
                    return Ok(Session {
                        pid,
                        sock: Some(sock),
                    });
                }
                Ok(Err(Continued::Refused(e))) => return Err(e),
                // it is gone (ended by its alarm, killed): a new child opens the session
                Ok(Err(Continued::Gone(e))) => {
                    tracing::debug!(target: "sshd_gsi::pam", "the login's PAM child is gone ({e}): starting another");
                }
                Err(_) => {
                    return Err(format!(
                        "PAM did not answer within {} s",
                        SESSION_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        match self.job(request, Some(stdio), SESSION_TIMEOUT).await? {
            (Some(pid), sock) => Ok(Session {
                pid,
                sock: Some(sock),
            }),
            (None, _) => Err("PAM helper did not name the session's process".into()),
        }
    }
}

/// The child that ran a login's account stack, waiting (on its socket) for the login's first
/// session. Dropping it ends the child (it reads the end of its socket and ends PAM).
pub struct AccountJob(JobSocket);

impl std::fmt::Debug for AccountJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountJob")
    }
}

/// Why the account child did not open a session.
enum Continued {
    /// PAM's refusal (or the process could not start): final.
    Refused(String),
    /// The child was no longer there to ask.
    Gone(String),
}

impl AccountJob {
    /// Send the session's request with its stdio attached; wait for `ok PID`.
    async fn session(
        mut self,
        request: &Request,
        stdio: [&OwnedFd; 3],
    ) -> Result<(i32, JobSocket), Continued> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        use tokio::io::AsyncWriteExt;
        let body = serde_json::to_vec(request)
            .map_err(|e| Continued::Refused(format!("PAM helper: {e}")))?;
        let framed = crate::pam_proto::frame(&body);
        let fds = stdio.map(AsRawFd::as_raw_fd);
        let sock: &tokio::net::UnixStream = self.0.write.as_ref();
        // the descriptors travel with the first bytes of the request
        let sent = sock
            .async_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    sock.as_raw_fd(),
                    &[std::io::IoSlice::new(&framed)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await
            .map_err(|e| Continued::Gone(e.to_string()))?;
        if sent < framed.len() {
            self.0
                .write
                .write_all(&framed[sent..])
                .await
                .map_err(|e| Continued::Gone(e.to_string()))?;
        }
        match self.0.answer().await {
            Ok(Some(pid)) => Ok((pid, self.0)),
            Ok(None) => Err(Continued::Refused(
                "PAM helper did not name the session's process".into(),
            )),
            Err(e) if e == ENDED => Err(Continued::Gone(e)),
            Err(e) => Err(Continued::Refused(e)),
        }
    }
}

/// What [`JobSocket::answer`] says when the helper ended without a word.
const ENDED: &str = "PAM helper ended without an answer";

impl Running {
    fn start(program: &Path, service: &str) -> Result<Self, String> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("PAM broker: socketpair: {e}"))?;
        let fd = theirs.as_raw_fd();
        let mut command = std::process::Command::new(program);
        command
            .arg0(HELPER_NAME)
            .arg("serve")
            .arg(service)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // stderr stays the server's: what the broker cannot report otherwise goes to its log
        // SAFETY: runs in the forked child before exec and calls only async-signal-safe
        // functions (fcntl, dup2, close_range, sigprocmask, setsid) on descriptors open
        // before the fork.
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
                let mut none = std::mem::zeroed::<libc::sigset_t>();
                libc::sigemptyset(&mut none);
                if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start the PAM helper {}: {e}", program.display()))?;
        drop(theirs);
        // a broker that stops reading must not stall a login for long
        let _ = nix::sys::socket::setsockopt(
            &ours,
            nix::sys::socket::sockopt::SendTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        );
        Ok(Self {
            child: Some(child),
            jobs: ours,
        })
    }
}

/// The server's end of one job's socket.
struct JobSocket {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl JobSocket {
    fn new(sock: UnixStream) -> Result<Self, String> {
        use tokio::io::AsyncBufReadExt;
        let sock = sock
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(sock))
            .map_err(|e| format!("PAM helper: {e}"))?;
        let (read, write) = sock.into_split();
        Ok(Self {
            // short lines, rarely: a small buffer for each open session
            lines: tokio::io::BufReader::with_capacity(512, read).lines(),
            write,
        })
    }

    /// Send the request, read answers until `ok [PID]` or `error`.
    async fn converse(&mut self, body: &[u8]) -> Result<Option<i32>, String> {
        use tokio::io::AsyncWriteExt;
        self.write
            .write_all(&crate::pam_proto::frame(body))
            .await
            .map_err(|e| format!("PAM helper: cannot send the request: {e}"))?;
        self.answer().await
    }

    /// Read answers until `ok [PID]` or `error` (logging the `log` lines before them).
    async fn answer(&mut self) -> Result<Option<i32>, String> {
        loop {
            match self.lines.next_line().await {
                Ok(Some(l)) if l == "ok" => return Ok(None),
                Ok(Some(l)) if l.starts_with("ok ") => {
                    return match l[3..].parse::<i32>() {
                        Ok(pid) if pid > 1 => Ok(Some(pid)),
                        _ => Err(format!("PAM helper: bad answer {l:?}")),
                    };
                }
                Ok(Some(l)) => match l.strip_prefix("error ") {
                    Some(e) => return Err(e.to_string()),
                    None => log_line(&l),
                },
                Ok(None) => return Err(ENDED.into()),
                Err(e) => return Err(format!("PAM helper: {e}")),
            }
        }
    }
}

/// A session opened by the broker's child, which is the parent of its process.
pub struct Session {
    /// The session's process (it leads its own process group).
    pub pid: i32,
    /// None once the exit was reported.
    sock: Option<JobSocket>,
}

impl Session {
    /// Pass a client's `signal` request to the session's process group. The helper does it
    /// only while it has not reaped the process: after that the request reaches nobody.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(s) = &self.sock {
            // a line of a dozen bytes fits an empty socket buffer; a helper too busy to read
            // its socket loses the signal rather than stalling the connection
            let _ = s
                .write
                .try_write(format!("signal {}\n", sig as libc::c_int).as_bytes());
        }
    }

    /// Wait for the session's process to end: its wait status as the helper reports it. The
    /// helper's later lines (closing the session) are logged by a task of their own.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let Some(sock) = self.sock.as_mut() else {
            return Err(std::io::Error::other(
                "the session's exit was already reported",
            ));
        };
        loop {
            // cancel safe (Lines::next_line): the caller selects on this and on signals
            let line = sock.lines.next_line().await?;
            match line {
                Some(l) if l.starts_with("exit ") => {
                    let raw = l[5..].parse::<i32>().map_err(|_| {
                        std::io::Error::other(format!("PAM helper: bad answer {l:?}"))
                    })?;
                    if let Some(mut rest) = self.sock.take() {
                        tokio::spawn(async move {
                            while let Ok(Some(l)) = rest.lines.next_line().await {
                                log_line(&l);
                            }
                        });
                    }
                    return Ok(std::process::ExitStatus::from_raw(raw));
                }
                Some(l) => log_line(&l),
                None => {
                    self.sock = None;
                    return Err(std::io::Error::other(
                        "the PAM helper ended without reporting the session's exit",
                    ));
                }
            }
        }
    }
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
