//! The audit stream: one JSON object per line for every authentication decision and every
//! session start and end, appended to `[sshd] audit_log` (reopened on SIGHUP, so log rotation
//! works with a reload). Separate from the human log lines; never contains a token or key.
//!
//! Fields: `time` (RFC 3339), `event` (`auth`, `session_start`, `session_end`), `source`
//! (`ip:port`), `user` (the login name asked for), and per event: `method`, `decision`
//! (`accept`/`refuse`), `identity`, `credential` (fingerprint), `proxy_depth`, `account`,
//! `reasons`, and `cached` (`decision` or `verification`) when the decision or the credential's
//! verification came from the credential cache; `channel`, `request`; `exit_status`/`exit_signal`, `bytes_in`, `bytes_out`,
//! `seconds`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use hpccert_core::host::credential_cache::FromCache;
use hpccert_core::identity::mapping::Decision;
use serde_json::{Value, json};

/// Where audit events go (nowhere when not configured).
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

fn now() -> String {
    hpccert_core::trust::x509::format_unix(hpccert_core::token::unix_seconds(
        hpccert_core::clock::now(),
    ))
}

impl Audit {
    /// Open (create, append) the audit file, mode 0600.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = path else {
            return Ok(Self::default());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    fn write(&self, mut event: Value) {
        let Some(file) = &self.file else { return };
        event["time"] = json!(now());
        let mut line = event.to_string();
        line.push('\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(target: "sshd_gsi", "cannot write the audit log: {e}");
        }
    }

    /// An accepted login; `cached` says what came from the credential cache.
    pub fn accepted(
        &self,
        method: &str,
        user: &str,
        peer: &SocketAddr,
        d: &Decision,
        cached: Option<FromCache>,
    ) {
        let mut event = json!({
            "event": "auth", "decision": "accept", "method": method, "user": user,
            "source": peer.to_string(), "identity": d.identity().to_string(),
            "credential": d.credential(), "proxy_depth": d.proxy_depth(),
            "account": d.account().as_str(), "reasons": d.reasons(),
        });
        if let Some(c) = cached {
            event["cached"] = json!(c.as_str());
        }
        self.write(event);
    }

    pub fn refused(&self, method: &str, user: &str, peer: &SocketAddr, reason: &str) {
        self.write(json!({
            "event": "auth", "decision": "refuse", "method": method, "user": user,
            "source": peer.to_string(), "reasons": [reason],
        }));
    }

    pub fn session_start(
        &self,
        user: &str,
        peer: &SocketAddr,
        d: &Decision,
        channel: u32,
        request: &str,
    ) {
        self.write(json!({
            "event": "session_start", "user": user, "source": peer.to_string(),
            "identity": d.identity().to_string(), "credential": d.credential(),
            "account": d.account().as_str(), "channel": channel, "request": request,
        }));
    }

    /// `status`: Ok(exit status) or Err(signal name).
    #[allow(clippy::too_many_arguments)]
    pub fn session_end(
        &self,
        user: &str,
        peer: &SocketAddr,
        account: &str,
        channel: u32,
        status: Result<i32, String>,
        bytes_in: u64,
        bytes_out: u64,
        seconds: f64,
    ) {
        let mut e = json!({
            "event": "session_end", "user": user, "source": peer.to_string(), "account": account,
            "channel": channel, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "seconds": (seconds * 1000.0).round() / 1000.0,
        });
        match status {
            Ok(code) => e["exit_status"] = json!(code),
            Err(sig) => e["exit_signal"] = json!(sig),
        }
        self.write(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/audit.jsonl");
        let a = Audit::open(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        let peer: SocketAddr = "10.0.0.5:40022".parse().unwrap_or_else(|e| panic!("{e}"));
        a.refused("x509", "alice", &peer, "certificate expired");
        a.session_end(
            "alice",
            &peer,
            "alice",
            0,
            Err("TERM".into()),
            10,
            20,
            1.23456,
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "auth");
        assert_eq!(lines[0]["decision"], "refuse");
        assert_eq!(lines[0]["reasons"][0], "certificate expired");
        assert_eq!(lines[0]["source"], "10.0.0.5:40022");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(lines[1]["exit_signal"], "TERM");
        assert_eq!(lines[1]["seconds"], 1.235);
        // no audit file configured: nothing written, no error
        Audit::default().refused("x509", "alice", &peer, "x");
    }
}
