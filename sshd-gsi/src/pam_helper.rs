//! The PAM helper's side (`sshd-gsi-pam-helper`, its own small program so that sessions pay
//! for libpam and the modules, not for the server's TLS, async runtime and code).
//!
//! `sshd-gsi-pam-helper serve SERVICE` is the **broker**: sshd-gsi starts one (as root) and
//! keeps it. It loads the service's PAM stack once (`pam_start`, which opens every module),
//! then waits on fd 3 for jobs: each is a datagram naming the job (`account` or `session`)
//! with descriptors attached (the job's socket; for a session also its stdin, stdout and
//! stderr). For each job it forks a child, which inherits the loaded modules page for page
//! (copy on write: a child costs the pages it writes, not another dynamic link of libpam and
//! the modules), and goes back to waiting: a module that blocks delays only its own child.
//!
//! The child reads the request on the job socket, runs the account stack, or opens the
//! session, runs the session's process as the account, passes signals on to it, reaps it,
//! reports its wait status (`exit RAW`), closes the session and ends.
#![allow(unsafe_code)] // fork, descriptor and signal handling: each block says why it is sound

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use crate::pam_proto::{HANDOVER_PREFIX, JOB_ACCOUNT, JOB_SESSION, Request};
use crate::spawn::{self, Account};
use hpccert_pam_appl::{self as libpam, Conversation, Pam};
use zeroize::Zeroizing;

/// `sshd-gsi-pam-helper serve SERVICE`: the broker (see the module's documentation).
pub fn broker_main(service: &str) -> ExitCode {
    // SAFETY: fd 3 is the socket the server set up before exec; nothing else owns it.
    let jobs = unsafe { OwnedFd::from_raw_fd(3) };
    // load the stack once; its handle lives as long as the broker so that the modules stay
    // mapped for every child. A service that cannot start now is each job's error to report.
    let _loaded = match Pam::start(service, "root", Box::new(Silent)) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("sshd-gsi-pam-helper: PAM service {service:?} not preloaded: {e}");
            None
        }
    };
    // and the NSS modules the children's account lookups use (passwd and group)
    let _ = Account::lookup("root");
    // children are reaped here (SIGCHLD read from a signalfd between jobs), so that their
    // CPU time is accounted to the broker (and through it to the server), as a waited-for
    // child's is; their results go to the server on their own sockets
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    let reaper = chld.thread_block().and_then(|()| {
        nix::sys::signalfd::SignalFd::with_flags(
            &chld,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
    });
    let reaper = match reaper {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sshd-gsi-pam-helper: SIGCHLD: {e}");
            return ExitCode::from(1);
        }
    };
    // what the preload left free goes back to the system before the first fork
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    loop {
        match wait_for_job(&jobs, &reaper) {
            Ok(true) => {}
            Ok(false) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // the server starts a new broker at its next job
                eprintln!("sshd-gsi-pam-helper: waiting for jobs: {e}");
                return ExitCode::from(1);
            }
        }
        let (mode, fds) = match receive_job(jobs.as_raw_fd()) {
            Ok(Some(job)) => job,
            // the server closed its end: it is gone or restarting the broker
            Ok(None) => return ExitCode::SUCCESS,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("sshd-gsi-pam-helper: reading jobs: {e}");
                return ExitCode::from(1);
            }
        };
        // the job and how many descriptors come with it
        let (job, wanted) = if mode == JOB_ACCOUNT {
            ("account", 1)
        } else if mode == JOB_SESSION {
            ("session", 4)
        } else {
            ("", 0)
        };
        if wanted == 0 || fds.len() != wanted {
            // dropping the descriptors closes the job socket: the server reads "no answer"
            eprintln!(
                "sshd-gsi-pam-helper: bad job {:?} with {} descriptors",
                String::from_utf8_lossy(&mode),
                fds.len()
            );
            continue;
        }
        // SAFETY: the broker is single-threaded (no thread is ever started), so the child may
        // go on running ordinary code after fork.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code = match become_job(jobs, &fds) {
                    Ok(()) => helper_main(job),
                    Err(e) => {
                        eprintln!("sshd-gsi-pam-helper: setting up a job: {e}");
                        ExitCode::from(1)
                    }
                };
                std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
            }
            // the parent's copies close here: only the child holds the job's ends
            Ok(nix::unistd::ForkResult::Parent { .. }) => drop(fds),
            Err(e) => eprintln!("sshd-gsi-pam-helper: fork: {e}"),
        }
    }
}

/// Wait until a job can be read (true), reaping the children that ended meanwhile.
fn wait_for_job(
    jobs: &OwnedFd,
    reaper: &nix::sys::signalfd::SignalFd,
) -> Result<bool, nix::errno::Errno> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [
        PollFd::new(jobs.as_fd(), PollFlags::POLLIN),
        PollFd::new(reaper.as_fd(), PollFlags::POLLIN),
    ];
    poll(&mut fds, PollTimeout::NONE)?;
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    let (job, ended) = (ready(&fds[0]), ready(&fds[1]));
    if ended {
        while let Ok(Some(_)) = reaper.read_signal() {}
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
    }
    Ok(job)
}

/// A job's name and the descriptors that came with it.
type Job = (Vec<u8>, Vec<OwnedFd>);

/// One job from the server. `None` at the end of the stream.
fn receive_job(sock: RawFd) -> Result<Option<Job>, nix::errno::Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: each descriptor was just received and is owned by nobody else.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        // more descriptors than a job carries: refuse the job (the received ones close)
        return Ok(Some((Vec::new(), fds)));
    }
    Ok(Some((buf[..n].to_vec(), fds)))
}

/// In the forked child: the job socket becomes fd 3 and the session's stdio (or /dev/null)
/// fds 0 to 2, the broker's socket closes, SIGCHLD is waited for again, and the child leads
/// a session of its own.
fn become_job(broker: OwnedFd, fds: &[OwnedFd]) -> Result<(), String> {
    // the broker's socket is fd 3: the dup2 onto 3 below closes it
    let _ = broker.into_raw_fd();
    let null;
    let stdio: [RawFd; 3] = if fds.len() == 4 {
        [fds[1].as_raw_fd(), fds[2].as_raw_fd(), fds[3].as_raw_fd()]
    } else {
        null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        [null.as_raw_fd(); 3]
    };
    // every received descriptor (and /dev/null) is above 3 (0 to 2 are the broker's, 3 its
    // socket), so no dup2 below overwrites a source still to be copied
    for (target, source) in [(3, fds[0].as_raw_fd())]
        .into_iter()
        .chain((0..3).zip(stdio))
    {
        // SAFETY: dup2 onto the standard descriptors and fd 3 of this single-threaded child;
        // the sources are open. The copies do not have close-on-exec.
        if unsafe { libc::dup2(source, target) } != target {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    // the broker's signalfd is not the child's business, nor is its blocked SIGCHLD
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    chld.thread_unblock().map_err(|e| format!("SIGCHLD: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    Ok(())
}

/// The broker's conversation while preloading: nothing is asked then.
struct Silent;

impl Conversation for Silent {
    fn prompt(&mut self, _echo: bool, _text: &str) -> Option<Zeroizing<String>> {
        None
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

/// A job: read the request on fd 3 (the job socket), run the stacks, answer on fd 3.
fn helper_main(mode: &str) -> ExitCode {
    // SAFETY: fd 3 is the job socket (become_job); nothing else in this process owns it.
    let sock = unsafe { UnixStream::from_raw_fd(3) };
    let reporter = Reporter { sock };
    let body = match crate::pam_proto::read_frame(&reporter.sock) {
        Ok(b) => b,
        Err(e) => {
            reporter.error(&e);
            return ExitCode::from(1);
        }
    };
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            reporter.error(&format!("bad request: {e}"));
            return ExitCode::from(1);
        }
    };
    match mode {
        "account" => {
            // a module that hangs ends this child, not the login's wait
            // SAFETY: alarm has no memory effects; SIGALRM's default action ends the process.
            unsafe { libc::alarm(crate::pam_proto::ACCOUNT_TIMEOUT_SECS) };
            let pam = match account_stack(&request, &reporter) {
                Ok(pam) => pam,
                Err(e) => {
                    reporter.error(&e);
                    return ExitCode::from(1);
                }
            };
            reporter.ok();
            // SAFETY: as above; 0 cancels the alarm.
            unsafe { libc::alarm(0) };
            drop(request);
            // the login's first session may follow on this socket: one PAM handle for the
            // account check and the session, as under sshd, and no second fork
            match next_session(&reporter.sock) {
                Ok(None) => ExitCode::SUCCESS,
                Ok(Some(request)) => session_stack(request, reporter, Some(pam)),
                Err(e) => {
                    reporter.error(&e);
                    ExitCode::from(1)
                }
            }
        }
        "session" => session_stack(request, reporter, None),
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
        crate::pam_proto::send_line(&self.sock, l);
    }
    fn ok(&self) {
        self.line("ok");
    }
    fn started(&self, pid: nix::unistd::Pid) {
        self.line(&format!("ok {pid}"));
    }
    fn error(&self, e: &str) {
        self.line(&format!("error {e}"));
    }
    fn log(&self, level: &str, m: &str) {
        self.line(&format!("log {level} {m}"));
    }
}

/// Where the conversation's messages go: log lines to the server, and the terminal of a PTY
/// session (as sshd shows PAM's messages). Nobody answers prompts: a module that asks fails.
struct HelperConversation {
    reporter: UnixStream,
}

/// Whether the job's stdout is the terminal of a PTY session (set once the session's request
/// is known; the account check shows nothing).
static TERMINAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl HelperConversation {
    fn report(&self, level: &str, m: &str) {
        crate::pam_proto::send_line(&self.reporter, &format!("log {level} {m}"));
    }

    fn show(&self, m: &str) {
        if TERMINAL.load(std::sync::atomic::Ordering::Relaxed) {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{m}");
            let _ = out.flush();
        }
    }
}

impl Conversation for HelperConversation {
    fn prompt(&mut self, _echo: bool, text: &str) -> Option<Zeroizing<String>> {
        self.report(
            "warn",
            &format!("a PAM module asked {text:?}; sshd-gsi's PAM stacks cannot prompt"),
        );
        None
    }

    fn info(&mut self, text: &str) {
        self.report("debug", &format!("PAM: {text}"));
        self.show(text);
    }

    fn error(&mut self, text: &str) {
        self.report("info", &format!("PAM: {text}"));
        self.show(text);
    }
}

fn context(request: &Request, reporter: &Reporter) -> Result<Pam, String> {
    let conversation = HelperConversation {
        reporter: reporter
            .sock
            .try_clone()
            .map_err(|e| format!("cannot duplicate the helper socket: {e}"))?,
    };
    let mut pam = Pam::start(&request.service, &request.user, Box::new(conversation))?;
    set_items(&mut pam, request)?;
    Ok(pam)
}

/// The client, the terminal and the verified identity, for the stacks about to run.
fn set_items(pam: &mut Pam, request: &Request) -> Result<(), String> {
    pam.set_item(libpam::PAM_RHOST, &request.rhost)?;
    pam.set_item(libpam::PAM_TTY, request.tty.as_deref().unwrap_or("ssh"))?;
    for (k, v) in &request.handover {
        pam.putenv(k, v)?;
    }
    Ok(())
}

fn account_stack(request: &Request, reporter: &Reporter) -> Result<Pam, String> {
    let mut pam = context(request, reporter)?;
    pam.acct_mgmt(libpam::PAM_SILENT)
        .map_err(|e| format!("PAM account check for {} refused: {e}", request.user))?;
    Ok(pam)
}

/// After the account check: wait for the login's first session (its request, with its
/// stdin, stdout and stderr attached), or the end of the connection (`None`). The
/// descriptors become this process's 0 to 2.
fn next_session(sock: &UnixStream) -> Result<Option<Request>, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (n, fds) = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(|e| format!("session request: {e}"))? {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        // SAFETY: each descriptor was just received and is owned by nobody
                        // else.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("session request: {e}")),
        }
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if fds.len() != 3 || n < 4 {
        return Err(format!(
            "session request with {} descriptors and {n} bytes",
            fds.len()
        ));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > crate::pam_proto::MAX_REQUEST {
        return Err(format!("session request of {len} bytes"));
    }
    buf.truncate(n);
    let mut body = buf.split_off(4);
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        (&*sock)
            .read_exact(&mut rest)
            .map_err(|e| format!("session request: {e}"))?;
        body.extend(rest);
    } else if body.len() > len {
        return Err("session request: more than one request".into());
    }
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded child; the
        // source is open (and above 3: 0 to 3 are taken).
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    drop(fds);
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("bad request: {e}"))
}

fn session_stack(mut request: Request, reporter: Reporter, account: Option<Pam>) -> ExitCode {
    let Some(run) = request.run.take() else {
        reporter.error("a session request without a process");
        return ExitCode::from(1);
    };
    let user = request.user.clone();
    // as the server resolved it at login, else (a request without it) looked up now
    let resolved = match request.account.take() {
        Some(r) if r.name == request.user => Ok(account_of(r)),
        Some(r) => Err(format!(
            "the request names account {} and user {}",
            r.name, request.user
        )),
        None => Account::lookup(&request.user),
    };
    let user_account = match resolved {
        Ok(a) => a,
        Err(e) => {
            reporter.error(&e);
            return ExitCode::from(1);
        }
    };
    // modules that hang (an unreachable logind, a slow home directory server) end this
    // child after a while; the alarm is cancelled once the session is open
    // SAFETY: alarm has no memory effects; SIGALRM's default action ends the process.
    unsafe { libc::alarm(crate::pam_proto::SESSION_TIMEOUT_SECS) };
    TERMINAL.store(run.pty, std::sync::atomic::Ordering::Relaxed);
    let pam = match account {
        // the login's account check ran on this handle: the terminal is known now
        Some(mut pam) => set_items(&mut pam, &request).map(|()| pam),
        None => context(&request, &reporter),
    };
    let mut pam = match pam {
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
        reporter.error(&format!("PAM session for {user} could not be opened: {e}"));
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
    // SAFETY: as above; 0 cancels the alarm.
    unsafe { libc::alarm(0) };
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
                &format!("PAM session for {user} did not close cleanly: {e}"),
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
    let child = spawn::as_account(&mut cmd, &user_account, run.pty)
        .and_then(|()| match &run.confine {
            Some(confinement) => crate::confine::apply(&mut cmd, confinement),
            None => Ok(()),
        })
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
    reporter.started(pid);
    // what setting up took (the request, PAM's scratch, the deep stack of the modules) goes
    // back to the system: an idle session should cost little more than the modules' state
    drop(cmd);
    drop(run);
    drop(user_account);
    drop(request);
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    release_stack_below_here();
    let status = wait_forwarding(pid, &signals, &reporter.sock);
    // the session's output ends with its process, not with the PAM close below
    release_stdio();
    reporter.line(&format!("exit {}", raw_status(status)));
    close(&mut pam);
    drop(pam);
    ExitCode::SUCCESS
}

/// Give back the stack pages below this frame: the setup (serde, PAM's modules, the spawn)
/// went deep, the wait that follows is shallow. Pages below the stack pointer hold nothing
/// live (no signal handler runs on this stack: the forwarded signals are blocked and read
/// from a signalfd); a later touch gets a zeroed page. Everything from 8 KiB below this
/// frame down to 1 MiB below it is released; parts of the range that are not mapped are
/// skipped by the kernel.
#[inline(never)]
fn release_stack_below_here() {
    const PAGE: usize = 4096;
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let top = (sp - 8 * 1024) & !(PAGE - 1);
    let bottom = top.saturating_sub(1024 * 1024);
    // SAFETY: the range lies below the current stack frame (with an 8 KiB margin for this
    // function's callees), where nothing live is kept; MADV_DONTNEED only drops pages, which
    // read back as zeros. The result is ignored: ENOMEM only reports unmapped parts.
    unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            top - bottom,
            libc::MADV_DONTNEED,
        );
    }
}

/// The account as the server resolved it.
fn account_of(r: crate::pam_proto::AccountRecord) -> Account {
    use nix::unistd::{Gid, Uid};
    Account {
        name: r.name,
        uid: Uid::from_raw(r.uid),
        gid: Gid::from_raw(r.gid),
        home: r.home,
        shell: r.shell,
        groups: r.groups.into_iter().map(Gid::from_raw).collect(),
    }
}

/// A wait status as `waitpid` gives it, for the server to report as the process's exit.
fn raw_status(status: nix::sys::wait::WaitStatus) -> i32 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => crate::pam_proto::wait_status(Some(code), None),
        WaitStatus::Signaled(_, sig, core) => {
            crate::pam_proto::wait_status(None, Some((sig as i32, core)))
        }
        _ => crate::pam_proto::wait_status(None, None),
    }
}

fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    let mut set = nix::sys::signal::SigSet::empty();
    // every signal of RFC 4254 6.9 a client may send, and SIGCHLD (the session's end); the
    // fault signals can be blocked and waited for when another process sends them
    for s in [
        SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE, SIGCONT,
        SIGABRT, SIGFPE, SIGILL, SIGSEGV,
    ] {
        set.add(s);
    }
    set
}

/// Wait for the session process, passing on to its process group every signal sent to this
/// helper and every `signal N` line the server sends on the job socket (a client's `signal`
/// request; SIGKILL included, which could not travel as a signal to the helper). Only this
/// helper, its parent, signals the group, and only until it has reaped the session process:
/// a signal can never reach a process group that a recycled pid now leads.
fn wait_forwarding(
    pid: nix::unistd::Pid,
    signals: &nix::sys::signal::SigSet,
    server: &UnixStream,
) -> nix::sys::wait::WaitStatus {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let forward = |sig: libc::c_int| {
        // SAFETY: killpg has no memory effects; the group is the session's, not yet reaped.
        unsafe {
            libc::killpg(pid.as_raw(), sig);
        }
    };
    let Ok(incoming) =
        SignalFd::with_flags(signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        // without a signalfd, signals are still passed on (the server's lines are not)
        return wait_sigwait(pid, signals, forward);
    };
    let mut server_open = true;
    let mut pending = Vec::new();
    loop {
        if let Some(status) = ended(pid) {
            return status;
        }
        let (signal_ready, server_ready) = {
            let mut fds = vec![PollFd::new(incoming.as_fd(), PollFlags::POLLIN)];
            if server_open {
                fds.push(PollFd::new(server.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return wait_sigwait(pid, signals, forward),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if signal_ready {
            while let Ok(Some(info)) = incoming.read_signal() {
                let sig = info.ssi_signo as libc::c_int;
                if sig != libc::SIGCHLD {
                    forward(sig);
                }
            }
        }
        if server_ready {
            let mut buf = [0u8; 256];
            match (&*server).read(&mut buf) {
                // the server is gone (restarting, say): the session goes on without it
                Ok(0) | Err(_) => server_open = false,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if let Some(sig) = requested_signal(&line[..end]) {
                            forward(sig);
                        }
                    }
                    if pending.len() > 64 {
                        // no line of the protocol is that long: drop the garbage
                        pending.clear();
                    }
                }
            }
        }
    }
}

/// The session process's wait status once it has ended (reaped by this call), else `None`.
fn ended(pid: nix::unistd::Pid) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        return match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => Some(s),
            Ok(_) => None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => Some(WaitStatus::Exited(pid, 255)),
        };
    }
}

/// `signal N` from the server, for a signal a client may send (RFC 4254 6.9) or SIGKILL.
fn requested_signal(line: &[u8]) -> Option<libc::c_int> {
    let n: libc::c_int = std::str::from_utf8(line)
        .ok()?
        .strip_prefix("signal ")?
        .parse()
        .ok()?;
    let allowed = [
        libc::SIGABRT,
        libc::SIGALRM,
        libc::SIGFPE,
        libc::SIGHUP,
        libc::SIGILL,
        libc::SIGINT,
        libc::SIGKILL,
        libc::SIGPIPE,
        libc::SIGQUIT,
        libc::SIGSEGV,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGCONT,
    ];
    allowed.contains(&n).then_some(n)
}

/// Waiting with `sigwait` when no signalfd can be had.
fn wait_sigwait(
    pid: nix::unistd::Pid,
    signals: &nix::sys::signal::SigSet,
    forward: impl Fn(libc::c_int),
) -> nix::sys::wait::WaitStatus {
    loop {
        if let Some(status) = ended(pid) {
            return status;
        }
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait reads the initialised set and writes one int into `sig`.
        if unsafe { libc::sigwait(signals.as_ref(), &mut sig) } != 0 || sig == libc::SIGCHLD {
            continue;
        }
        forward(sig);
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
