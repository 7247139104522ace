//! One SSH connection: the russh handler. Authentication callbacks ask [`crate::auth`];
//! channel requests start processes through [`crate::spawn`] and pump their I/O.
//!
//! Supported per session channel: `pty-req`, `env` (allow-list), `window-change`, `signal`,
//! then one of `exec`, `shell` or `subsystem sftp`. Output flows with the channel window (a
//! slow client slows the child; buffers stay bounded); exit status or signal, EOF and close
//! are sent when the process ends.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;

use hpccert_core::config::SshMethod;
use hpccert_core::mapping::Identity;
use russh::server::{Auth, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelMsg, Pty as PtyMode, Sig};
use tokio::io::AsyncWriteExt;

use crate::auth::{self, Login, SharedEngine};
use crate::limits::AuthFlag;
use crate::spawn::{self, Account, Pty};
use crate::x509auth;
use hpccert_core::token::entry::{Next, TokenEntry};

/// A PTY requested for a channel.
#[derive(Debug, Clone)]
struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    px: u32,
    py: u32,
    modes: Vec<(PtyMode, u32)>,
}

/// A session channel before and after its process starts.
#[derive(Debug, Default)]
struct ChannelState {
    channel: Option<Channel<Msg>>,
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    master: Option<Arc<OwnedFd>>,
    pid: Option<i32>,
    /// `signal` requests go to the task that owns (and reaps) the process.
    signals: Option<tokio::sync::mpsc::UnboundedSender<nix::sys::signal::Signal>>,
}

/// The handler of one connection.
pub struct Connection {
    engine: SharedEngine,
    peer: SocketAddr,
    local: SocketAddr,
    entry: TokenEntry,
    login: Option<(Login, Account)>,
    /// The login name the client authenticated as.
    user: String,
    channels: HashMap<ChannelId, ChannelState>,
    /// Set on a successful login (the accept loop's grace timer reads it).
    authenticated: Arc<AuthFlag>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        engine: SharedEngine,
        peer: SocketAddr,
        local: SocketAddr,
        authenticated: Arc<AuthFlag>,
    ) -> Self {
        Self {
            engine,
            peer,
            local,
            entry: TokenEntry::default(),
            login: None,
            user: String::new(),
            channels: HashMap::new(),
            authenticated,
        }
    }

    /// A refusal that offers every configured method again, as sshd does (russh would drop
    /// `password` from the list after a wrong one, and clients that follow the list then
    /// give up instead of asking again).
    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(crate::server::method_set(&self.engine.config)),
            partial_success: false,
        }
    }

    fn offers(&self, m: SshMethod) -> bool {
        self.engine.config.sshd.methods.contains(&m)
    }

    /// Verify a token for `user` off the async threads (the key source may fetch).
    async fn token_login(&mut self, method: &'static str, user: &str, token: String) -> Auth {
        let engine = self.engine.clone();
        let u = user.to_string();
        let now = hpccert_core::clock::now();
        let result = tokio::task::spawn_blocking(move || engine.token_login(&u, &token, now))
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        self.finish_login(method, user, result, None).await
    }

    async fn finish_login(
        &mut self,
        method: &'static str,
        user: &str,
        result: Result<hpccert_core::mapping::Decision, String>,
        chain_pem: Option<String>,
    ) -> Auth {
        let result = result.and_then(|decision| {
            let account = Account::lookup(decision.account().as_str())?;
            account.can_switch_to()?;
            Ok((
                Login {
                    method,
                    decision,
                    chain_pem,
                },
                account,
            ))
        });
        let result = match result {
            Ok((login, account)) if let Some(helper) = &self.engine.pam_helper => {
                let request = self.pam_request(&account, &login, None, None);
                crate::pam::account(helper, &request)
                    .await
                    .map(|()| (login, account))
            }
            other => other,
        };
        match result {
            Ok((login, account)) => {
                self.engine
                    .log_success(method, user, &self.peer, &login.decision);
                self.login = Some((login, account));
                self.user = user.to_string();
                self.authenticated.mark();
                Auth::Accept
            }
            Err(reason) => {
                self.engine.log_failure(method, user, &self.peer, &reason);
                self.reject()
            }
        }
    }

    /// What the PAM helper needs: service, account, client, terminal, the verified identity
    /// (the `HPCCERT_*` variables), and the process for a session.
    fn pam_request(
        &self,
        account: &Account,
        login: &Login,
        tty: Option<&str>,
        run: Option<crate::pam::Run>,
    ) -> crate::pam::Request {
        let mut handover = identity_environment(login.method, &login.decision);
        if let Some(pem) = &login.chain_pem {
            // for pam_hpccert's `x509` option: the chain whose key the client proved to hold
            handover.push((hpccert_core::pam::ENV_X509_CHAIN.to_string(), pem.clone()));
        }
        crate::pam::Request {
            service: self.engine.config.sshd.pam_service.clone(),
            user: account.name.clone(),
            rhost: self.peer.ip().to_string(),
            tty: tty.map(str::to_string),
            handover,
            run,
        }
    }

    /// The environment of a session process.
    fn environment(
        &self,
        account: &Account,
        login: &Login,
        state: &ChannelState,
        tty: Option<&str>,
    ) -> Vec<(OsString, OsString)> {
        let mut env = spawn::base_environment(account);
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set(
            "SSH_CONNECTION",
            format!(
                "{} {} {} {}",
                self.peer.ip(),
                self.peer.port(),
                self.local.ip(),
                self.local.port()
            ),
        );
        set(
            "SSH_CLIENT",
            format!(
                "{} {} {}",
                self.peer.ip(),
                self.peer.port(),
                self.local.port()
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
            .filter(|(k, _)| spawn::env_allowed(k, &self.engine.config.sshd.accept_env))
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        client.into_iter().chain(env).collect()
    }

    /// Start the channel's process: `argv` runs as the account, with or without PTY; with
    /// PAM, under a PAM helper that opens the session first.
    async fn start(
        &mut self,
        id: ChannelId,
        what: Start,
        session: &mut Session,
    ) -> Result<(), String> {
        let Some((login, account)) = &self.login else {
            return Err("not authenticated".into());
        };
        let Some(state) = self.channels.get(&id) else {
            return Err("unknown channel".into());
        };
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
        let env = self.environment(
            account,
            login,
            state,
            pty.as_ref().map(|p| p.slave_path.as_str()),
        );
        let mut launch = if let Some(helper) = &self.engine.pam_helper {
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
            };
            let tty = pty.as_ref().map(|p| p.slave_path.as_str());
            let request = self.pam_request(account, login, tty, Some(run));
            Launch::Pam(crate::pam::session_command(helper)?, Box::new(request))
        } else {
            let mut c = std::process::Command::new(&program);
            if let Some(a0) = &argv0 {
                std::os::unix::process::CommandExt::arg0(&mut c, a0);
            }
            c.args(&args).env_clear().envs(env);
            spawn::as_account(&mut c, account, pty.is_some())?;
            let mut c = tokio::process::Command::from(c);
            c.kill_on_drop(false);
            Launch::Direct(c)
        };
        let cmd = launch.command();
        match &pty {
            Some(pty) => {
                let slave =
                    |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| e.to_string());
                cmd.stdin(slave(&pty.slave)?)
                    .stdout(slave(&pty.slave)?)
                    .stderr(slave(&pty.slave)?);
            }
            None => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        let (child, session_pid) = launch
            .spawn()
            .await
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let Some(state) = self.channels.get_mut(&id) else {
            return Err("unknown channel".into());
        };
        let Some(channel) = state.channel.take() else {
            return Err("a process already runs on this channel".into());
        };
        let handle = session.handle();
        let (signal_tx, signal_rx) = tokio::sync::mpsc::unbounded_channel();
        state.signals = Some(signal_tx);
        let owner = ProcessOwner {
            signals: signal_rx,
            via_helper: self.engine.pam_helper.is_some(),
        };
        let tally = Tally {
            engine: self.engine.clone(),
            user: self.user.clone(),
            peer: self.peer,
            account: account.name.clone(),
            channel: u32::from(id),
            started: std::time::Instant::now(),
            bytes_in: Arc::default(),
            bytes_out: Arc::default(),
            login_record: None,
        };
        crate::metrics::get().sessions.inc();
        crate::metrics::get().sessions_open.inc();
        self.engine.audit.session_start(
            &self.user,
            &self.peer,
            &login.decision,
            u32::from(id),
            &what.to_string(),
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
                        host: self.peer.ip(),
                    };
                    record.login();
                    tally.login_record = Some(record);
                }
                tokio::spawn(pump_pty(channel, child, owner, master, handle, id, tally));
            }
            None => {
                state.pid = session_pid;
                tokio::spawn(pump_pipes(channel, child, owner, handle, id, tally));
            }
        }
        tracing::info!(
            target: "sshd_gsi::session",
            "session started for {} ({}) {}: {}",
            account.name,
            login.decision.identity(),
            auth::from(&self.peer),
            what
        );
        Ok(())
    }

    fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(id)
        } else {
            session.channel_failure(id)
        }
    }
}

/// The presented chain as PEM, the presented certificate first.
fn chain_pem(chain: &hpccert_core::x509::PresentedChain) -> Option<String> {
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
    decision: &hpccert_core::mapping::Decision,
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

/// How a session process starts: directly, or under the PAM helper.
enum Launch {
    Direct(tokio::process::Command),
    Pam(crate::pam::HelperCommand, Box<crate::pam::Request>),
}

impl Launch {
    fn command(&mut self) -> &mut tokio::process::Command {
        match self {
            Self::Direct(c) => c,
            Self::Pam(h, _) => &mut h.command,
        }
    }

    /// The process to wait for, and the pid whose process group signals go to (the session's
    /// process itself, not the PAM helper above it).
    async fn spawn(self) -> Result<(tokio::process::Child, Option<i32>), String> {
        match self {
            Self::Direct(mut c) => {
                let child = c.spawn().map_err(|e| e.to_string())?;
                let pid = child.id().and_then(|p| i32::try_from(p).ok());
                Ok((child, pid))
            }
            Self::Pam(h, request) => crate::pam::start_session(h, &request)
                .await
                .map(|(child, pid)| (child, Some(pid))),
        }
    }
}

/// What a channel runs.
#[derive(Debug)]
enum Start {
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

/// What the audit stream records of a session.
struct Tally {
    engine: SharedEngine,
    user: String,
    peer: SocketAddr,
    account: String,
    channel: u32,
    started: std::time::Instant,
    bytes_in: Arc<std::sync::atomic::AtomicU64>,
    bytes_out: Arc<std::sync::atomic::AtomicU64>,
    /// utmp/wtmp/lastlog of a PTY session.
    login_record: Option<crate::loginrec::LoginRecord>,
}

/// Copy a process's output to the channel in reads of up to 32 KiB: each read becomes one
/// SSH packet (russh's own `data()` copies through an 8 KiB buffer, four times the packets).
async fn forward<R: tokio::io::AsyncRead + Unpin>(
    write: &russh::ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    reader: R,
) -> std::io::Result<u64> {
    let mut reader = tokio::io::BufReader::with_capacity(32 * 1024, reader);
    let mut tx = write.make_writer_ext(ext);
    tokio::io::copy_buf(&mut reader, &mut tx).await
}

/// An AsyncRead that counts what passes.
struct Counted<R>(R, Arc<std::sync::atomic::AtomicU64>);

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.1.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        r
    }
}

/// The exit of a process as SSH reports it (and as the audit stream records it).
async fn report_exit(
    write: &russh::ChannelWriteHalf<Msg>,
    handle: &russh::server::Handle,
    id: ChannelId,
    status: std::io::Result<std::process::ExitStatus>,
    tally: &Tally,
) {
    use std::os::unix::process::ExitStatusExt;
    let recorded = match &status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Ok(code),
            (None, Some(sig)) => Err(format!("{:?}", signal_name(sig))),
            _ => Ok(255),
        },
        Err(_) => Ok(255),
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(r) = &tally.login_record {
        r.logout();
    }
    let m = crate::metrics::get();
    m.sessions_open.dec();
    m.bytes("in", load(&tally.bytes_in));
    m.bytes("out", load(&tally.bytes_out));
    tally.engine.audit.session_end(
        &tally.user,
        &tally.peer,
        &tally.account,
        tally.channel,
        recorded,
        load(&tally.bytes_in),
        load(&tally.bytes_out),
        tally.started.elapsed().as_secs_f64(),
    );
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => {
                let _ = write.exit_status(u32::try_from(code).unwrap_or(255)).await;
            }
            (None, Some(sig)) => {
                let _ = handle
                    .exit_signal_request(
                        id,
                        signal_name(sig),
                        s.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
            _ => {
                let _ = write.exit_status(255).await;
            }
        },
        Err(e) => {
            tracing::warn!(target: "sshd_gsi::session", "waiting for the session process: {e}");
            let _ = write.exit_status(255).await;
        }
    }
    let _ = write.eof().await;
    let _ = write.close().await;
}

fn signal_name(sig: i32) -> Sig {
    match sig {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(format!("SIG{other}")),
    }
}

fn unix_signal(sig: &Sig) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) if name == "USR2" => Signal::SIGUSR2,
        Sig::Custom(_) => return None,
    })
}

/// Pipes: client data -> stdin (EOF closes it), stdout -> data, stderr -> extended data 1.
async fn pump_pipes(
    channel: Channel<Msg>,
    mut child: tokio::process::Child,
    owner: ProcessOwner,
    handle: russh::server::Handle,
    id: ChannelId,
    tally: Tally,
) {
    let (mut read, write) = channel.split();
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = Arc::new(write);
    let (w1, w2) = (write.clone(), write.clone());
    let (c1, c2, c3) = (
        tally.bytes_out.clone(),
        tally.bytes_out.clone(),
        tally.bytes_in.clone(),
    );
    let out = tokio::spawn(async move {
        if let Some(s) = stdout {
            let _ = forward(&w1, None, Counted(s, c1)).await;
        }
    });
    let err = tokio::spawn(async move {
        if let Some(s) = stderr {
            let _ = forward(&w2, Some(1), Counted(s, c2)).await;
        }
    });
    let input = tokio::spawn(async move {
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    c3.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let Some(s) = stdin.as_mut() else { continue };
                    if s.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    });
    // signals reach the process while its output drains, and until it is reaped
    let mut owner = owner;
    let outputs = async {
        let _ = out.await;
        let _ = err.await;
    };
    tokio::pin!(outputs);
    loop {
        tokio::select! {
            () = &mut outputs => break,
            Some(sig) = owner.signals.recv() => owner.deliver(&child, sig),
        }
    }
    let status = owner.wait(&mut child).await;
    input.abort();
    report_exit(&write, &handle, id, status, &tally).await;
}

/// The task that owns a session's process (or its PAM helper) and reaps it: the only one that
/// signals it. Tokio knows the child's id until it has reaped it, and an unreaped process's pid
/// (and the process group it leads) cannot be anyone else's: so a `signal` request that comes
/// after the process ended reaches nobody, never a recycled pid.
struct ProcessOwner {
    signals: tokio::sync::mpsc::UnboundedReceiver<nix::sys::signal::Signal>,
    /// The child is the PAM helper, which passes signals on to the session's process group
    /// while it has not reaped the session process (`pam_helper::wait_forwarding`).
    via_helper: bool,
}

impl ProcessOwner {
    fn deliver(&self, child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            tracing::debug!(target: "sshd_gsi::session", "signal {sig} not sent: the session process has ended");
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        if self.via_helper {
            crate::pam::signal_helper(pid, sig);
        } else {
            // the process leads its own session: signal its process group
            let _ = nix::sys::signal::killpg(pid, sig);
        }
    }

    /// Wait for the child, delivering signals meanwhile.
    async fn wait(
        &mut self,
        child: &mut tokio::process::Child,
    ) -> std::io::Result<std::process::ExitStatus> {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                Some(sig) = self.signals.recv() => self.deliver(child, sig),
            }
        }
    }
}

/// A PTY: client data -> master, master -> data; the process's exit ends the channel.
async fn pump_pty(
    channel: Channel<Msg>,
    mut child: tokio::process::Child,
    mut owner: ProcessOwner,
    master: Arc<OwnedFd>,
    handle: russh::server::Handle,
    id: ChannelId,
    tally: Tally,
) {
    let (mut read, write) = channel.split();
    let reader = master
        .try_clone()
        .map(std::fs::File::from)
        .map(tokio::fs::File::from_std);
    let writer = master
        .try_clone()
        .map(std::fs::File::from)
        .map(tokio::fs::File::from_std);
    let (Ok(reader), Ok(mut writer)) = (reader, writer) else {
        let _ = child.start_kill();
        report_exit(&write, &handle, id, child.wait().await, &tally).await;
        return;
    };
    let write = Arc::new(write);
    let w = write.clone();
    // reading the master fails with EIO once the last slave fd is closed: that is EOF
    let (c_out, c_in) = (tally.bytes_out.clone(), tally.bytes_in.clone());
    let out = tokio::spawn(async move {
        let _ = forward(&w, None, Counted(EioIsEof(reader), c_out)).await;
    });
    let input = tokio::spawn(async move {
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    c_in.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if writer.write_all(&data).await.is_err() {
                        break;
                    }
                    let _ = writer.flush().await;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    });
    let status = owner.wait(&mut child).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), out).await;
    input.abort();
    if let Some(record) = &tally.login_record {
        spawn::release_pty(&record.tty);
    }
    report_exit(&write, &handle, id, status, &tally).await;
}

/// An AsyncRead that turns EIO (PTY master after the slave closed) into end of file.
struct EioIsEof(tokio::fs::File);

impl tokio::io::AsyncRead for EioIsEof {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // clients start with "none" to learn the methods: not a failure worth INFO (as sshd)
        tracing::debug!(target: "sshd_gsi::auth", "Failed none for {user} {}", auth::from(&self.peer));
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::Password) {
            return Ok(Auth::UnsupportedMethod);
        }
        Ok(self
            .token_login("token (password)", user, password.trim().to_string())
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // russh cannot tell an OpenSSH certificate's key from a plain key here: with
        // openssh-cert enabled the possession proof is asked for, and the certificate is
        // judged in auth_openssh_certificate; plain keys are refused in auth_publickey
        Ok(if self.offers(SshMethod::OpensshCert) {
            Auth::Accept
        } else {
            self.reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // clients offer every key they hold: logged at debug, as sshd logs them at VERBOSE
        let fp = key.public_key.fingerprint(russh::keys::HashAlg::Sha256);
        tracing::debug!(
            target: "sshd_gsi::auth",
            "Failed publickey for {user} {}: plain SSH keys are not accepted ({fp})",
            auth::from(&self.peer)
        );
        Ok(self.reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::OpensshCert) {
            self.engine
                .log_failure("openssh-cert", user, &self.peer, "method not enabled");
            return Ok(self.reject());
        }
        let result =
            self.engine
                .ssh_cert_login(user, certificate, &self.peer, hpccert_core::clock::now());
        Ok(self.finish_login("openssh-cert", user, result, None).await)
    }

    async fn auth_external_publickey(
        &mut self,
        user: &str,
        algorithm: &str,
        key_blob: &[u8],
        signature: Option<russh::server::ExternalSignature<'_>>,
    ) -> Result<Auth, Self::Error> {
        let refuse = |this: &Self, reason: String| {
            this.engine.log_failure("x509", user, &this.peer, &reason);
            Ok(self.reject())
        };
        if !self.offers(SshMethod::X509)
            || !self
                .engine
                .config
                .sshd
                .x509_algorithms
                .iter()
                .any(|a| a == algorithm)
        {
            return refuse(self, format!("algorithm {algorithm} is not enabled"));
        }
        let key = match x509auth::parse_key_blob(algorithm, key_blob) {
            Ok(k) => k,
            Err(e) => return refuse(self, e),
        };
        if let Err(e) = x509auth::check_key(algorithm, &key.leaf) {
            return refuse(self, e);
        }
        if let Some(sig) = &signature
            && let Err(e) =
                x509auth::verify_signature(algorithm, &key.leaf, sig.signed_data, sig.signature)
        {
            return refuse(self, format!("possession proof: {e}"));
        }
        // the whole decision, for a query too: PK_OK promises that a signature will be accepted
        let engine = self.engine.clone();
        let u = user.to_string();
        let now = hpccert_core::clock::now();
        let chain = key.chain;
        let chain_pem = (signature.is_some() && self.engine.pam_helper.is_some())
            .then(|| chain_pem(&chain))
            .flatten();
        let lease = signature.is_some();
        let result = tokio::task::spawn_blocking(move || engine.x509_login(&u, &chain, now, lease))
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        if signature.is_none() {
            return match result {
                Ok(d) => {
                    tracing::debug!(target: "sshd_gsi::auth", "x509 query for {user} acceptable: {}", d.identity());
                    Ok(Auth::Accept)
                }
                Err(e) => refuse(self, e),
            };
        }
        Ok(self.finish_login("x509", user, result, chain_pem).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::KeyboardInteractive) {
            return Ok(self.reject()); // russh drops the connection on UnsupportedMethod here
        }
        let prompt = |text: String| Auth::Partial {
            name: "".into(),
            instructions: "".into(),
            prompts: vec![(text.into(), false)].into(),
        };
        let Some(mut response) = response else {
            self.entry = TokenEntry::default();
            return Ok(prompt(auth::FIRST_PROMPT.to_string()));
        };
        let answer = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match self
            .entry
            .answer(&answer, self.engine.config.tokens.max_token_bytes)
        {
            Next::Ask(n) => Ok(prompt(auth::part_prompt(n))),
            Next::TooLong => {
                self.engine.log_failure(
                    "token (keyboard-interactive)",
                    user,
                    &self.peer,
                    "token too long",
                );
                Ok(self.reject())
            }
            Next::Done(token) => match token.as_str() {
                Some(t) => {
                    let t = t.to_string();
                    Ok(self
                        .token_login("token (keyboard-interactive)", user, t)
                        .await)
                }
                None => {
                    self.engine.log_failure(
                        "token (keyboard-interactive)",
                        user,
                        &self.peer,
                        "the answer is not UTF-8 text",
                    );
                    Ok(self.reject())
                }
            },
        }
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .engine
            .config
            .sshd
            .banner
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok()))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.login.is_none() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let max = self.engine.config.sshd.max_sessions;
        if self.channels.len() >= max {
            tracing::warn!(target: "sshd_gsi::session", "session channel refused {}: {} open, [sshd] max_sessions = {max}", auth::from(&self.peer), self.channels.len());
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let id = channel.id();
        self.channels.insert(
            id,
            ChannelState {
                channel: Some(channel),
                ..ChannelState::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(PtyMode, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.channels.get_mut(&channel) {
            Some(state) if state.channel.is_some() => {
                state.pty = Some(PtyRequest {
                    term: term.to_string(),
                    cols: col_width,
                    rows: row_height,
                    px: pix_width,
                    py: pix_height,
                    modes: modes.to_vec(),
                });
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = spawn::env_allowed(variable_name, &self.engine.config.sshd.accept_env);
        if let (true, Some(state)) = (allowed, self.channels.get_mut(&channel)) {
            state
                .env
                .push((variable_name.to_string(), variable_value.to_string()));
        }
        Self::reply(session, channel, allowed)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let r = self.start(channel, Start::Shell, session).await;
        self.after_start(channel, r, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let r = self.start(channel, Start::Exec(command), session).await;
        self.after_start(channel, r, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let r = if name == "sftp" {
            let program = self.engine.config.sshd.sftp_server.clone();
            self.start(channel, Start::Subsystem(program), session)
                .await
        } else {
            Err(format!("unknown subsystem {name:?}"))
        };
        self.after_start(channel, r, session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            match &state.master {
                Some(m) => {
                    if let Err(e) = spawn::resize(m, col_width, row_height, pix_width, pix_height) {
                        tracing::debug!(target: "sshd_gsi::session", "window change: {e}");
                    }
                }
                None => {
                    if let Some(p) = state.pty.as_mut() {
                        (p.cols, p.rows, p.px, p.py) =
                            (col_width, row_height, pix_width, pix_height);
                    }
                }
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // to the task that owns the process (ProcessOwner): it signals only while the process
        // is not reaped
        if let (Some(tx), Some(sig)) = (
            self.channels.get(&channel).and_then(|s| s.signals.as_ref()),
            unix_signal(&signal),
        ) {
            let _ = tx.send(sig);
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

impl Connection {
    fn after_start(
        &mut self,
        channel: ChannelId,
        r: Result<(), String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        match r {
            Ok(()) => session.channel_success(channel),
            Err(e) => {
                tracing::warn!(target: "sshd_gsi::session", "session request refused {}: {e}", auth::from(&self.peer));
                session.channel_failure(channel)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The auth adapter driven the way russh drives it: query, then signed request; and the
    //! keyboard-interactive token dialogue.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use hpccert_core::config::Config;
    use hpccert_core::devpki::{self, CertSpec, Credential, KeyKind};
    use russh::server::{ExternalSignature, Handler};
    use std::path::Path;

    const ALG: &str = "x509v3-ecdsa-sha2-nistp256";

    /// A `signal` request that comes after the session's process was reaped reaches nobody,
    /// even when the kernel gave its pid (and process group id) to a new process meanwhile:
    /// the next pid is forced through /proc/sys/kernel/ns_last_pid (root only).
    #[test]
    fn a_signal_after_the_process_was_reaped_never_reaches_a_recycled_pid() {
        use std::os::unix::process::CommandExt as _;
        if !nix::unistd::geteuid().is_root()
            || std::fs::metadata("/proc/sys/kernel/ns_last_pid").is_err()
        {
            eprintln!("SKIPPED: needs root and /proc/sys/kernel/ns_last_pid");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _attempt in 0..20 {
                let mut c = std::process::Command::new("true");
                c.process_group(0);
                let mut child = tokio::process::Command::from(c).spawn().unwrap();
                let pid = child.id().unwrap();
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut owner = ProcessOwner {
                    signals: rx,
                    via_helper: false,
                };
                assert!(owner.wait(&mut child).await.unwrap().success());
                // a new process group leader with the same pid
                std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
                let mut v = std::process::Command::new("sleep");
                v.arg("30").process_group(0);
                let mut victim = v.spawn().unwrap();
                if victim.id() != pid {
                    let _ = victim.kill();
                    let _ = victim.wait();
                    continue; // another process took the pid first: try again
                }
                // the client's signal request after the end
                tx.send(nix::sys::signal::Signal::SIGTERM).unwrap();
                let delivered = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    owner.signals.recv(),
                )
                .await;
                if let Ok(Some(sig)) = delivered {
                    owner.deliver(&child, sig);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                let alive = victim.try_wait().unwrap().is_none();
                let _ = victim.kill();
                let _ = victim.wait();
                assert!(
                    alive,
                    "the signal reached the process that reused pid {pid}"
                );
                return;
            }
            panic!("could not make a process reuse a pid in 20 tries");
        });
    }

    struct Site {
        _dir: tempfile::TempDir,
        user: Credential,
        stranger: Credential,
        me: String,
        engine: SharedEngine,
    }

    fn site() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let now = hpccert_core::clock::now();
        let ca =
            devpki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=Test CA", now, 10).unwrap()).unwrap();
        let other_ca =
            devpki::self_signed_ca(&CertSpec::ca("/O=Else/CN=Other CA", now, 10).unwrap()).unwrap();
        let spec = |dn: &str| CertSpec {
            key: KeyKind::EcP256,
            ..CertSpec::user(dn, now, 1).unwrap()
        };
        let user = devpki::issue(&ca, &spec("/O=Grid/CN=alice")).unwrap();
        let stranger = devpki::issue(&other_ca, &spec("/O=Grid/CN=alice")).unwrap();
        let trust = dir.path().join("certificates");
        devpki::install_ca(&trust, &ca.cert, None, None).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let gridmap = dir.path().join("grid-mapfile");
        std::fs::write(&gridmap, format!("\"/O=Grid/CN=alice\" {me}\n")).unwrap();
        let text = format!(
            "version = 1\n[trust]\nca_dir = \"{}\"\n[mapping]\ngrid_mapfile = \"{}\"\n[sshd]\nmethods = [\"x509\", \"keyboard-interactive\"]\nuse_pam = false\n",
            trust.display(),
            gridmap.display()
        );
        let config = Config::parse(&text, Path::new("test.toml")).unwrap();
        let engine = Arc::new(crate::auth::Engine::load(config).unwrap());
        Site {
            _dir: dir,
            user,
            stranger,
            me,
            engine,
        }
    }

    /// The engine's blocking HTTP client must be made and dropped outside a runtime.
    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn connection(engine: &SharedEngine) -> Connection {
        let addr: SocketAddr = "127.0.0.1:40022".parse().unwrap();
        Connection::new(engine.clone(), addr, addr, Arc::new(AuthFlag::default()))
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
        out.extend_from_slice(s);
    }

    fn blob(cred: &Credential) -> Vec<u8> {
        let mut b = Vec::new();
        string(&mut b, ALG.as_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        string(&mut b, &cred.cert.to_der().unwrap());
        b.extend_from_slice(&0u32.to_be_bytes());
        b
    }

    fn signature(cred: &Credential, data: &[u8]) -> Vec<u8> {
        let hash = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), data).unwrap();
        let sig = openssl::ecdsa::EcdsaSig::sign(&hash, &cred.key.ec_key().unwrap()).unwrap();
        let mut inner = Vec::new();
        for n in [sig.r(), sig.s()] {
            let mut v = n.to_vec();
            if v.first().is_some_and(|f| f & 0x80 != 0) {
                v.insert(0, 0);
            }
            string(&mut inner, &v);
        }
        let mut out = Vec::new();
        string(&mut out, b"ecdsa-sha2-nistp256");
        string(&mut out, &inner);
        out
    }

    #[test]
    fn x509_query_then_signed_request() {
        let s = site();
        run(async {
            let mut c = connection(&s.engine);
            let b = blob(&s.user);
            // the query: acceptable, nobody logged in yet
            let a = c
                .auth_external_publickey(&s.me, ALG, &b, None)
                .await
                .unwrap();
            assert_eq!(a, Auth::Accept);
            assert!(c.login.is_none());
            // the signed request
            let data = b"session id and request";
            let sig = signature(&s.user, data);
            let a = c
                .auth_external_publickey(
                    &s.me,
                    ALG,
                    &b,
                    Some(ExternalSignature {
                        signed_data: data,
                        signature: &sig,
                    }),
                )
                .await
                .unwrap();
            assert_eq!(a, Auth::Accept);
            let (login, account) = c.login.as_ref().unwrap();
            assert_eq!(login.method, "x509");
            assert_eq!(account.name, s.me);
            assert!(c.authenticated.is_set());
        });
    }

    #[test]
    fn x509_refusals() {
        let s = site();
        run(async {
            let b = blob(&s.user);
            let data = b"session id and request";
            // a signature over other data, or by another key
            for sig in [signature(&s.user, b"other"), signature(&s.stranger, data)] {
                let mut c = connection(&s.engine);
                let a = c
                    .auth_external_publickey(
                        &s.me,
                        ALG,
                        &b,
                        Some(ExternalSignature {
                            signed_data: data,
                            signature: &sig,
                        }),
                    )
                    .await
                    .unwrap();
                assert_eq!(a, c.reject());
                assert!(c.login.is_none());
            }
            let mut c = connection(&s.engine);
            // an untrusted CA: refused already at the query
            assert_eq!(
                c.auth_external_publickey(&s.me, ALG, &blob(&s.stranger), None)
                    .await
                    .unwrap(),
                c.reject()
            );
            // a login name the grid-mapfile does not list
            assert_eq!(
                c.auth_external_publickey("nobody", ALG, &b, None)
                    .await
                    .unwrap(),
                c.reject()
            );
            // an algorithm not enabled, and garbage
            assert_eq!(
                c.auth_external_publickey(&s.me, "x509v3-ssh-rsa", &b, None)
                    .await
                    .unwrap(),
                c.reject()
            );
            assert_eq!(
                c.auth_external_publickey(&s.me, ALG, b"\x00\x00", None)
                    .await
                    .unwrap(),
                c.reject()
            );
            assert!(c.login.is_none());
        });
    }

    #[test]
    fn keyboard_interactive_starts_with_the_token_prompt() {
        let s = site();
        run(async {
            // (the continuation of answers is tested on hpccert_core's TokenEntry: russh's Response
            // cannot be built outside russh)
            let mut c = connection(&s.engine);
            match c.auth_keyboard_interactive(&s.me, "", None).await.unwrap() {
                Auth::Partial { prompts, .. } => {
                    assert_eq!(prompts.len(), 1);
                    assert_eq!(prompts[0].0, crate::auth::FIRST_PROMPT);
                    assert!(!prompts[0].1, "the token is not echoed");
                }
                other => panic!("{other:?}"),
            }
            assert!(c.login.is_none());
        });
    }
}
