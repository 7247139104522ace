//! I/O pumping: a session process's output to the channel (in flow with the window) and
//! the client's data to its input, over pipes or a PTY; signals to the process while it is
//! not reaped ([`ProcessOwner`]); the exit status or signal, EOF and close at the end, with the
//! session's audit record.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use russh::server::Msg;
use russh::{Channel, ChannelId, ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

use crate::auth::SharedEngine;
use crate::spawn;

/// What the audit stream records of a session.
pub(super) struct Tally {
    pub(super) engine: SharedEngine,
    pub(super) user: String,
    pub(super) peer: SocketAddr,
    pub(super) account: String,
    pub(super) channel: u32,
    pub(super) started: std::time::Instant,
    pub(super) bytes_in: Arc<std::sync::atomic::AtomicU64>,
    pub(super) bytes_out: Arc<std::sync::atomic::AtomicU64>,
    /// utmp/wtmp/lastlog of a PTY session.
    pub(super) login_record: Option<crate::loginrec::LoginRecord>,
    /// The credential files the session holds (removed after the last holder).
    pub(super) _handed: crate::sessionfile::SessionFiles,
    /// The identity's place under its `max-sessions` restriction, given back at the end.
    pub(super) _slot: Option<crate::auth::SessionSlot>,
    /// Marks the channel ended once the session is over.
    pub(super) _ends: super::channel::EndsChannel,
}

/// The most a channel data packet carries here (as OpenSSH's 32 KiB `CHAN_SES_PACKET_DEFAULT`).
const PACKET: usize = 32 * 1024;

/// Copy a process's output to the channel in packets of up to 32 KiB. A pipe read returns what
/// one write of the process put there (8 KiB for coreutils' `head`, 4 KiB for many programs),
/// so when `coalesce` is set, what is already waiting in the pipe joins the packet before it
/// goes (never waiting for more: an interactive program's output is not held back). Fewer,
/// fuller packets are less work for both ends; OpenSSH's channel buffer does the same.
async fn forward<R: tokio::io::AsyncRead + Unpin>(
    write: &russh::ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    mut reader: R,
    coalesce: bool,
) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut tx = write.make_writer_ext(ext);
    let mut buf = vec![0u8; PACKET];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut filled = n;
        while coalesce && filled < buf.len() {
            match read_ready(&mut reader, &mut buf[filled..]) {
                Some(Ok(m)) if m > 0 => filled += m,
                // nothing waiting, or the end (the next read sees it again), or an error
                // (likewise): send what there is
                _ => break,
            }
        }
        tx.write_all(&buf[..filled]).await?;
        total += filled as u64;
    }
    tx.flush().await?;
    Ok(total)
}

/// Read what is ready now, without waiting: `None` when nothing is. (A pending read leaves
/// nothing behind: the next real read registers the task's own waker.)
fn read_ready<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut rb = tokio::io::ReadBuf::new(buf);
    match std::pin::Pin::new(reader).poll_read(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(())) => Some(Ok(rb.filled().len())),
        std::task::Poll::Ready(Err(e)) => Some(Err(e)),
        std::task::Poll::Pending => None,
    }
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

pub(super) fn unix_signal(sig: &Sig) -> Option<nix::sys::signal::Signal> {
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

/// A session's process: the server's child, or (with PAM) the child of its PAM helper, which
/// reports its end and passes signals on.
pub(super) enum Process {
    Direct(tokio::process::Child),
    Pam(crate::pam::Session),
}

impl Process {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Self::Direct(c) => c.wait().await,
            Self::Pam(s) => s.wait().await,
        }
    }

    fn start_kill(&mut self) {
        match self {
            Self::Direct(c) => {
                let _ = c.start_kill();
            }
            Self::Pam(s) => s.signal(nix::sys::signal::Signal::SIGKILL),
        }
    }
}

/// The server's ends of a session's pipes.
pub(super) struct Pipes {
    pub(super) stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    pub(super) stdout: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub(super) stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
}

impl Pipes {
    /// The pipes tokio made for a child of the server.
    pub(super) fn of(child: &mut tokio::process::Child) -> Self {
        Self {
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
            stdout: child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stderr: child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        }
    }
}

/// Pipes: client data -> stdin (EOF closes it), stdout -> data, stderr -> extended data 1.
pub(super) async fn pump_pipes(
    channel: Channel<Msg>,
    (mut child, pipes): (Process, Pipes),
    owner: ProcessOwner,
    handle: russh::server::Handle,
    id: ChannelId,
    tally: Tally,
) {
    let (mut read, write) = channel.split();
    let Pipes {
        mut stdin,
        stdout,
        stderr,
    } = pipes;
    let write = Arc::new(write);
    let (w1, w2) = (write.clone(), write.clone());
    let (c1, c2, c3) = (
        tally.bytes_out.clone(),
        tally.bytes_out.clone(),
        tally.bytes_in.clone(),
    );
    let out = tokio::spawn(async move {
        if let Some(s) = stdout {
            let _ = forward(&w1, None, Counted(s, c1), true).await;
        }
    });
    let err = tokio::spawn(async move {
        if let Some(s) = stderr {
            let _ = forward(&w2, Some(1), Counted(s, c2), true).await;
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

/// The task that owns a session's process and reaps it (or, with PAM, hears from its helper
/// that it was reaped): the only one that signals it. Tokio knows the child's id until it has
/// reaped it, and an unreaped process's pid (and the process group it leads) cannot be anyone
/// else's: so a `signal` request that comes after the process ended reaches nobody, never a
/// recycled pid. A PAM helper keeps the same rule for its child
/// (`pam_helper::wait_forwarding`).
pub(super) struct ProcessOwner {
    pub(super) signals: tokio::sync::mpsc::UnboundedReceiver<nix::sys::signal::Signal>,
}

impl ProcessOwner {
    fn deliver(&self, child: &Process, sig: nix::sys::signal::Signal) {
        match child {
            Process::Direct(child) => {
                let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
                    tracing::debug!(target: "sshd_gsi::session", "signal {sig} not sent: the session process has ended");
                    return;
                };
                // the process leads its own session: signal its process group
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
            }
            Process::Pam(session) => session.signal(sig),
        }
    }

    /// Wait for the child, delivering signals meanwhile.
    async fn wait(&mut self, child: &mut Process) -> std::io::Result<std::process::ExitStatus> {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                Some(sig) = self.signals.recv() => self.deliver(child, sig),
            }
        }
    }
}

/// A PTY: client data -> master, master -> data; the process's exit ends the channel.
pub(super) async fn pump_pty(
    channel: Channel<Msg>,
    mut child: Process,
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
        child.start_kill();
        report_exit(&write, &handle, id, child.wait().await, &tally).await;
        return;
    };
    let write = Arc::new(write);
    let w = write.clone();
    // reading the master fails with EIO once the last slave fd is closed: that is EOF
    let (c_out, c_in) = (tally.bytes_out.clone(), tally.bytes_in.clone());
    let out = tokio::spawn(async move {
        // a terminal's output goes as it comes (a file read here runs on the blocking pool)
        let _ = forward(&w, None, Counted(EioIsEof(reader), c_out), false).await;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

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
                let child = tokio::process::Command::from(c).spawn().unwrap();
                let pid = child.id().unwrap();
                let mut child = Process::Direct(child);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut owner = ProcessOwner { signals: rx };
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
}
