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

/// A session channel before and after its process starts.
#[derive(Debug, Default)]
pub(super) struct ChannelState {
    pub(super) channel: Option<Channel<Msg>>,
    pub(super) pty: Option<PtyRequest>,
    pub(super) env: Vec<(String, String)>,
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
