//! Process start: what a session channel runs (exec, shell, subsystem), its environment
//! (`SSH_*`, the verified identity as `HPCCERT_*`, the client's allowed variables), the PTY,
//! and the launch directly or under the PAM helper; the I/O is then [`super::pump`]'s.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use hpccert_core::identity::Identity;
use russh::{ChannelId, Pty as PtyMode};

use super::channel::{ChannelState, EndsChannel};
use super::pump::{Pipes, Process, ProcessOwner, Tally, pump_pipes, pump_pty};
use crate::auth::SessionSlot;
use crate::auth::{self, Login, SharedEngine};
use crate::confine::Confinement;
use crate::sessionfile::SessionFiles;
use crate::spawn::{self, Account, Pty};
use hpccert_core::identity::rights::{Files, SessionRights};

/// Who a session's process starts for: the connection's side of it.
pub(super) struct Origin<'a> {
    pub(super) engine: &'a SharedEngine,
    /// The login name the client authenticated as.
    pub(super) user: &'a str,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
}

/// What the PAM helper needs: service, account, client, terminal, the verified identity
/// (the `HPCCERT_*` variables), and the process for a session.
pub(super) fn pam_request(
    origin: &Origin<'_>,
    account: &Account,
    login: &Login,
    tty: Option<&str>,
    run: Option<crate::pam::Run>,
) -> crate::pam::Request {
    let mut handover = identity_environment(login.method, &login.decision);
    if let Some(pem) = &login.chain_pem {
        // for pam_hpccert's `x509` option: the chain whose key the client proved to hold
        handover.push((
            hpccert_core::host::pam::ENV_X509_CHAIN.to_string(),
            pem.clone(),
        ));
    }
    crate::pam::Request {
        service: origin.engine.config.sshd.pam_service.clone(),
        user: account.name.clone(),
        rhost: origin.peer.ip().to_string(),
        tty: tty.map(str::to_string),
        handover,
        // for a session: the helper starts the process as this account without asking NSS
        account: run.as_ref().map(|_| account.record()),
        run,
    }
}

/// The environment of a session process.
fn environment(
    origin: &Origin<'_>,
    (account, login): (&Account, &Login),
    state: &ChannelState,
    tty: Option<&str>,
    handed: &SessionFiles,
) -> Vec<(OsString, OsString)> {
    let mut env = spawn::base_environment(account);
    let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
    for (name, file) in handed.environment() {
        set(name, file.display().to_string());
    }
    set(
        "SSH_CONNECTION",
        format!(
            "{} {} {} {}",
            origin.peer.ip(),
            origin.peer.port(),
            origin.local.ip(),
            origin.local.port()
        ),
    );
    set(
        "SSH_CLIENT",
        format!(
            "{} {} {}",
            origin.peer.ip(),
            origin.peer.port(),
            origin.local.port()
        ),
    );
    if let Some(tty) = tty {
        set("SSH_TTY", tty.to_string());
    }
    if let Some(p) = &state.pty {
        set("TERM", p.term.clone());
    }
    for (k, v) in identity_environment(login.method, &login.decision) {
        env.push((k.into(), v.into()));
    }
    // the client's, never a protected name (env_allowed), and before everything the
    // server sets: a later value of the same name wins, so the server's would anyway
    let client: Vec<(OsString, OsString)> = state
        .env
        .iter()
        .filter(|(k, _)| spawn::env_allowed(k, &origin.engine.config.sshd.accept_env))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    client.into_iter().chain(env).collect()
}

/// Start the channel's process: `argv` runs as the account, with or without PTY; with
/// PAM, under a PAM helper that opens the session first.
pub(super) async fn start(
    origin: &Origin<'_>,
    (login, account): (&Login, &Account),
    state: &mut ChannelState,
    (id, what, original): (ChannelId, Start, Option<String>),
    (handed, slot, pam_job): (
        SessionFiles,
        Option<SessionSlot>,
        Option<crate::pam::AccountJob>,
    ),
    handle: russh::server::Handle,
) -> Result<(), String> {
    // one process per session channel (RFC 4254 6.5): a second shell, exec or subsystem
    // request is refused before anything starts, as sshd does
    if state.channel.is_none() {
        return Err("a process already runs on this channel".into());
    }
    let pty = match &state.pty {
        Some(p) if !matches!(what, Start::Subsystem(_)) => {
            let pty = Pty::open(p.cols, p.rows, p.px, p.py)?;
            apply_modes(&pty.slave, &p.modes);
            pty.give_to(account)?;
            Some(pty)
        }
        _ => None,
    };
    let shell = account.shell.clone();
    // what the token's scopes allow: commands, and files below its storage.* paths
    let rights = SessionRights::under(&login.decision, &origin.engine.config);
    let mut confinement = None;
    let what = match what {
        Start::Exec(_) | Start::Shell => {
            rights.check_commands()?;
            what
        }
        Start::Subsystem(program) => match &rights.files {
            Files::All => Start::Subsystem(program),
            Files::Nothing => {
                return Err(format!(
                    "the token allows no file access: it holds no storage.* scope ({})",
                    rights.from_scopes.join(" ")
                ));
            }
            Files::Below { read, write } => {
                // the home directory when the scopes reach it (as without them), else the
                // first allowed directory
                let start_dir = if write
                    .iter()
                    .chain(read)
                    .any(|p| account.home.starts_with(p))
                {
                    Some(&account.home)
                } else {
                    write.iter().chain(read).find(|p| p.is_dir())
                };
                let mut line = shell_quote(&program.display().to_string());
                if let Some(dir) = start_dir {
                    line.push_str(&format!(" -d {}", shell_quote(&dir.display().to_string())));
                }
                if write.is_empty() {
                    line.push_str(" -R");
                }
                confinement = Some(Confinement::new(read, write, &[&shell, &program]));
                Start::Subsystem(PathBuf::from(line))
            }
        },
    };
    let (program, argv0, args) = match &what {
        Start::Exec(command) => (shell.clone(), None, vec!["-c".to_string(), command.clone()]),
        Start::Shell => {
            let name = shell
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (shell.clone(), Some(format!("-{name}")), Vec::new())
        }
        // through the account's shell, as sshd runs subsystems (`$SHELL -c sftp-server`):
        // an account whose shell is nologin, false or a restricted shell gets no sftp
        Start::Subsystem(program) => (
            shell.clone(),
            None,
            vec!["-c".to_string(), program.display().to_string()],
        ),
    };
    let env = environment(
        origin,
        (account, login),
        state,
        pty.as_ref().map(|p| p.slave_path.as_str()),
        &handed,
    );
    let mut env = env;
    if let Some(original) = original {
        env.push(("SSH_ORIGINAL_COMMAND".into(), original.into()));
    }
    env.push(("HPCCERT_CAPABILITIES".into(), rights.to_string().into()));
    let launched = if let Some(pam) = &origin.engine.pam {
        let utf8 = |o: OsString| {
            o.into_string()
                .map_err(|o| format!("{} is not UTF-8", o.to_string_lossy()))
        };
        let env = env
            .into_iter()
            .map(|(k, v)| Ok((utf8(k)?, utf8(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let run = crate::pam::Run {
            program: utf8(program.clone().into_os_string())?,
            argv0,
            args,
            env,
            pty: pty.is_some(),
            confine: confinement.clone(),
        };
        let tty = pty.as_ref().map(|p| p.slave_path.as_str());
        let request = pam_request(origin, account, login, tty, Some(run));
        // the child's ends go to the PAM helper and close here once it has them
        let (theirs, ours) = match &pty {
            Some(pty) => {
                let slave = || pty.slave.try_clone().map_err(|e| e.to_string());
                ([slave()?, slave()?, slave()?], None)
            }
            None => {
                let (theirs, ours) = session_pipes()?;
                (theirs, Some(ours))
            }
        };
        let session = pam
            .session(&request, [&theirs[0], &theirs[1], &theirs[2]], pam_job)
            .await
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        drop(theirs);
        let pid = session.pid;
        (Process::Pam(session), ours, Some(pid))
    } else {
        let mut c = std::process::Command::new(&program);
        if let Some(a0) = &argv0 {
            std::os::unix::process::CommandExt::arg0(&mut c, a0);
        }
        c.args(&args).env_clear().envs(env);
        spawn::as_account(&mut c, account, pty.is_some())?;
        if let Some(confinement) = &confinement {
            crate::confine::apply(&mut c, confinement)?;
        }
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(false);
        match &pty {
            Some(pty) => {
                let slave =
                    |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| e.to_string());
                c.stdin(slave(&pty.slave)?)
                    .stdout(slave(&pty.slave)?)
                    .stderr(slave(&pty.slave)?);
            }
            None => {
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let pipes = pty.is_none().then(|| Pipes::of(&mut child));
        (Process::Direct(child), pipes, pid)
    };
    let (child, pipes, session_pid) = launched;
    let Some(channel) = state.channel.take() else {
        return Err("a process already runs on this channel".into());
    };
    let (signal_tx, signal_rx) = tokio::sync::mpsc::unbounded_channel();
    state.signals = Some(signal_tx);
    let owner = ProcessOwner { signals: signal_rx };
    let tally = Tally {
        engine: Arc::clone(origin.engine),
        user: origin.user.to_string(),
        peer: origin.peer,
        account: account.name.clone(),
        channel: u32::from(id),
        started: std::time::Instant::now(),
        bytes_in: Arc::default(),
        bytes_out: Arc::default(),
        login_record: None,
        _handed: handed,
        _slot: slot,
        _ends: EndsChannel(Arc::clone(&state.ended)),
    };
    crate::metrics::get().sessions.inc();
    crate::metrics::get().sessions_open.inc();
    origin.engine.audit.session_start(
        origin.user,
        &origin.peer,
        &login.decision,
        u32::from(id),
        &format!("{what} (may: {rights})"),
    );
    match pty {
        Some(pty) => {
            drop(pty.slave);
            state.pid = session_pid;
            let master = Arc::new(pty.master);
            state.master = Some(master.clone());
            let mut tally = tally;
            if let Some(pid) = state.pid {
                let record = crate::loginrec::LoginRecord {
                    pid,
                    tty: pty.slave_path.clone(),
                    user: account.name.clone(),
                    uid: account.uid.as_raw(),
                    host: origin.peer.ip(),
                };
                record.login();
                tally.login_record = Some(record);
            }
            tokio::spawn(pump_pty(channel, child, owner, master, handle, id, tally));
        }
        None => {
            state.pid = session_pid;
            let Some(pipes) = pipes else {
                return Err("a session without a PTY has no pipes".into());
            };
            tokio::spawn(pump_pipes(
                channel,
                (child, pipes),
                owner,
                handle,
                id,
                tally,
            ));
        }
    }
    tracing::info!(
        target: "sshd_gsi::session",
        "session started for {} ({}) {}: {}",
        account.name,
        login.decision.identity(),
        auth::from(&origin.peer),
        what
    );
    Ok(())
}

/// The presented chain as PEM, the presented certificate first.
pub(super) fn chain_pem(chain: &hpccert_core::trust::x509::PresentedChain) -> Option<String> {
    let mut pem = Vec::new();
    for c in chain.certificates() {
        pem.extend(c.to_pem().ok()?);
    }
    String::from_utf8(pem).ok()
}

/// The verified identity as environment variables (`HPCCERT_*`): for the session and, with
/// PAM, in the PAM environment for the account and session stacks.
fn identity_environment(
    method: &str,
    decision: &hpccert_core::identity::mapping::Decision,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    set("HPCCERT_AUTH_METHOD", method.to_string());
    set("HPCCERT_IDENTITY", decision.identity().to_string());
    set("HPCCERT_CREDENTIAL", decision.credential().to_string());
    match decision.identity() {
        Identity::Certificate(dn) => {
            set("HPCCERT_DN", dn.to_slash());
            set("HPCCERT_PROXY_DEPTH", decision.proxy_depth().to_string());
        }
        Identity::SshCertificate { key_id, ca } => {
            set("HPCCERT_SSH_CERT_KEY_ID", key_id.clone());
            set("HPCCERT_SSH_CERT_CA", ca.clone());
        }
        Identity::Token { issuer, subject } => {
            set("HPCCERT_TOKEN_ISSUER", issuer.clone());
            set("HPCCERT_TOKEN_SUBJECT", subject.clone());
            let scopes: Vec<String> = decision
                .capabilities()
                .iter()
                .map(ToString::to_string)
                .collect();
            set("HPCCERT_TOKEN_SCOPES", scopes.join(" "));
        }
    }
    env
}

/// Three pipes for a session without a PTY: the child's ends (stdin, stdout, stderr) and the
/// server's (non-blocking, in the runtime). Close-on-exec on all: the PAM helper gets its ends
/// over its socket and makes them its stdio.
fn session_pipes() -> Result<([OwnedFd; 3], Pipes), String> {
    use tokio::net::unix::pipe;
    let pair =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (in_r, in_w) = pair()?;
    let (out_r, out_w) = pair()?;
    let (err_r, err_w) = pair()?;
    let tokio = |e: std::io::Error| format!("pipe: {e}");
    let pipes = Pipes {
        stdin: Some(Box::new(pipe::Sender::from_owned_fd(in_w).map_err(tokio)?)),
        stdout: Some(Box::new(
            pipe::Receiver::from_owned_fd(out_r).map_err(tokio)?,
        )),
        stderr: Some(Box::new(
            pipe::Receiver::from_owned_fd(err_r).map_err(tokio)?,
        )),
    };
    Ok(([in_r, out_w, err_w], pipes))
}

/// What a channel runs.
#[derive(Debug)]
pub(super) enum Start {
    Exec(String),
    Shell,
    Subsystem(std::path::PathBuf),
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exec(c) => write!(f, "exec {c:?}"),
            Self::Shell => f.write_str("shell"),
            Self::Subsystem(p) => write!(f, "subsystem {}", p.display()),
        }
    }
}

/// Apply the client's terminal modes (RFC 4254 §8) to the PTY.
fn apply_modes(slave: &OwnedFd, modes: &[(PtyMode, u32)]) {
    use nix::sys::termios::{self, InputFlags, LocalFlags, OutputFlags, SetArg};
    let Ok(mut t) = termios::tcgetattr(slave) else {
        return;
    };
    for (mode, value) in modes {
        let on = *value != 0;
        let (i, o, l) = match mode {
            PtyMode::ICRNL => (InputFlags::ICRNL, OutputFlags::empty(), LocalFlags::empty()),
            PtyMode::IXON => (InputFlags::IXON, OutputFlags::empty(), LocalFlags::empty()),
            PtyMode::IXANY => (InputFlags::IXANY, OutputFlags::empty(), LocalFlags::empty()),
            PtyMode::IXOFF => (InputFlags::IXOFF, OutputFlags::empty(), LocalFlags::empty()),
            PtyMode::IMAXBEL => (
                InputFlags::IMAXBEL,
                OutputFlags::empty(),
                LocalFlags::empty(),
            ),
            PtyMode::IUTF8 => (InputFlags::IUTF8, OutputFlags::empty(), LocalFlags::empty()),
            PtyMode::OPOST => (InputFlags::empty(), OutputFlags::OPOST, LocalFlags::empty()),
            PtyMode::ONLCR => (InputFlags::empty(), OutputFlags::ONLCR, LocalFlags::empty()),
            PtyMode::ISIG => (InputFlags::empty(), OutputFlags::empty(), LocalFlags::ISIG),
            PtyMode::ICANON => (
                InputFlags::empty(),
                OutputFlags::empty(),
                LocalFlags::ICANON,
            ),
            PtyMode::ECHO => (InputFlags::empty(), OutputFlags::empty(), LocalFlags::ECHO),
            PtyMode::ECHOE => (InputFlags::empty(), OutputFlags::empty(), LocalFlags::ECHOE),
            PtyMode::ECHOK => (InputFlags::empty(), OutputFlags::empty(), LocalFlags::ECHOK),
            PtyMode::ECHONL => (
                InputFlags::empty(),
                OutputFlags::empty(),
                LocalFlags::ECHONL,
            ),
            PtyMode::IEXTEN => (
                InputFlags::empty(),
                OutputFlags::empty(),
                LocalFlags::IEXTEN,
            ),
            _ => continue,
        };
        t.input_flags.set(i, on);
        t.output_flags.set(o, on);
        t.local_flags.set(l, on);
    }
    let _ = termios::tcsetattr(slave, SetArg::TCSANOW, &t);
}

/// `s` in single quotes for `sh -c` (a quote inside closes, escapes and reopens).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
