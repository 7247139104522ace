//! The state of one session channel: the PTY and environment the client asked for before
//! its process starts, and what the running process needs from the handler afterwards.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use russh::server::Msg;
use russh::{Channel, Pty as PtyMode};

/// A PTY requested for a channel.
#[derive(Debug, Clone)]
pub(super) struct PtyRequest {
    pub(super) term: String,
    pub(super) cols: u32,
    pub(super) rows: u32,
    pub(super) px: u32,
    pub(super) py: u32,
    pub(super) modes: Vec<(PtyMode, u32)>,
}

/// A proxy file a client handed over and the server took: the file as it is written, and its
/// SHA-256 (sessions of a login that hand over the same file share it).
pub(super) struct HandedProxy {
    pub(super) file: zeroize::Zeroizing<Vec<u8>>,
    pub(super) digest: [u8; 32],
}

impl HandedProxy {
    pub(super) fn new(file: zeroize::Zeroizing<Vec<u8>>) -> Self {
        let digest = openssl::sha::sha256(&file);
        Self { file, digest }
    }
}

impl std::fmt::Debug for HandedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandedProxy(<secret>)")
    }
}

/// A session channel before and after its process starts.
#[derive(Debug, Default)]
pub(super) struct ChannelState {
    pub(super) channel: Option<Channel<Msg>>,
    pub(super) pty: Option<PtyRequest>,
    pub(super) env: Vec<(String, String)>,
    /// The proxy the client handed over for this session (`[sshd] x509_proxy_handover`),
    /// checked.
    pub(super) proxy: Option<HandedProxy>,
    pub(super) master: Option<Arc<OwnedFd>>,
    pub(super) pid: Option<i32>,
    /// `signal` requests go to the task that owns (and reaps) the process.
    pub(super) signals: Option<tokio::sync::mpsc::UnboundedSender<nix::sys::signal::Signal>>,
    /// Set when the channel's process has ended and the channel was closed by the server
    /// (russh then calls no close handler: the state is dropped at the next count).
    pub(super) ended: Arc<std::sync::atomic::AtomicBool>,
}

impl ChannelState {
    /// Whether the channel's process ended (the server closed the channel).
    pub(super) fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Marks a channel ended when dropped (held by the task that pumps its process).
#[derive(Debug)]
pub(super) struct EndsChannel(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for EndsChannel {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}
