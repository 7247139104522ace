//! systemd readiness (`Type=notify`): `READY=1`, `RELOADING=1`, `STOPPING=1` sent to
//! `$NOTIFY_SOCKET` (sd_notify(3)'s protocol: one datagram on a Unix socket; a leading `@`
//! names an abstract socket). Without `$NOTIFY_SOCKET` nothing is sent. Used by sshd-gsi and
//! mapping-portal.

use std::os::unix::net::UnixDatagram;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

pub fn ready() {
    send("READY=1\nSTATUS=accepting connections");
}

pub fn reloading() {
    send("RELOADING=1");
}

pub fn stopping() {
    send("STOPPING=1");
}
