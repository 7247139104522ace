//! The PAM helper's side (`sshd-gsi-pam-helper`, its own small program so that each session
//! pays for libpam and the modules, not for the server's TLS, async runtime and code): read
//! the request on fd 3, run the account stack, or open the session, run the session's process
//! as the account, forward signals, wait, close the session, and end as the process ended.
#![allow(unsafe_code)] // fd 3 and stdio handling: each block says why it is sound

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use crate::pam_proto::{HANDOVER_PREFIX, Request};
use crate::spawn::{self, Account};
use hpccert_pam_appl::{self as libpam, Conversation, Pam};
use zeroize::Zeroizing;

/// `sshd-gsi-pam-helper MODE`: read the request on fd 3, run the stacks, answer on fd 3.
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
    terminal: bool,
}

impl HelperConversation {
    fn report(&self, level: &str, m: &str) {
        crate::pam_proto::send_line(&self.reporter, &format!("log {level} {m}"));
    }

    fn show(&self, m: &str) {
        if self.terminal {
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

fn context(request: &Request, reporter: &Reporter, terminal: bool) -> Result<Pam, String> {
    let conversation = HelperConversation {
        reporter: reporter
            .sock
            .try_clone()
            .map_err(|e| format!("cannot duplicate the helper socket: {e}"))?,
        terminal,
    };
    let mut pam = Pam::start(&request.service, &request.user, Box::new(conversation))?;
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
    // what setting up took (the request, PAM's scratch) goes back to the system: an idle
    // session should cost little more than the modules' own state
    drop(cmd);
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
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
    // every signal of RFC 4254 6.9 a client may send, and SIGCHLD (the session's end); the
    // fault signals can be blocked and waited for when another process sends them
    for s in [
        SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE, SIGCONT,
        SIGABRT, SIGFPE, SIGILL, SIGSEGV,
    ] {
        set.add(s);
    }
    let mut raw = *set.as_ref();
    // SAFETY: sigaddset writes into the local, initialised sigset_t; the signal number is
    // SIGRTMIN, valid on Linux.
    unsafe {
        libc::sigaddset(&mut raw, crate::pam_proto::kill_carrier());
        nix::sys::signal::SigSet::from_sigset_t_unchecked(raw)
    }
}

/// Wait for the session process, passing every other signal on to its process group. Only
/// this helper, its parent, signals the group, and only until it has reaped the session
/// process: a signal can never reach a process group that a recycled pid now leads.
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
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait reads the initialised set and writes one int into `sig`.
        if unsafe { libc::sigwait(signals.as_ref(), &mut sig) } != 0 || sig == libc::SIGCHLD {
            continue;
        }
        let sig = if sig == crate::pam_proto::kill_carrier() {
            libc::SIGKILL
        } else {
            sig
        };
        // SAFETY: killpg has no memory effects; the group is the session's, not yet reaped.
        unsafe {
            libc::killpg(pid.as_raw(), sig);
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
