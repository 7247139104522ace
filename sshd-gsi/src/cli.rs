//! The command line of sshd-gsi, apart from `main` so that the man page and the shell
//! completions (`cargo xtask man`, `cargo xtask completions`) are generated from the same
//! definition: xtask includes this file. It depends only on clap and hpccert-core.

// The help texts below name config sections as TOML writes them (`[trust] ca_dir`); clap shows
// them verbatim in --help and the man pages, so they are not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::Parser;
use hpccert_core::config::DEFAULT_PATH;

/// SSH server for HPC login nodes: logins with X.509 certificates (RFC 6187, RFC 3820
/// proxies) and OAuth2 bearer tokens, mapped to local accounts through the grid-mapfile and
/// the token map, as /etc/hpccert/hpccert.toml configures.
///
/// Token logins: keyboard-interactive (prompt "Access token: "; an answer ending in "\"
/// continues with "Access token (part N): ", for clients that cut answers at 1023 bytes; see
/// hpccert-askpass) or the token as the password.
///
/// With [sshd] use_pam (the default) every login runs the PAM account stack of the service
/// sshd-gsi (/etc/pam.d/sshd-gsi) and every session process runs inside a PAM session, in a
/// child of the PAM broker /usr/libexec/hpccert/sshd-gsi-pam-helper (one process, started by
/// sshd-gsi, that loads the stack once and forks per login and per session). SIGHUP re-reads
/// the configuration and the files it names and starts a new broker; SIGTERM stops accepting
/// and lets the sessions finish.
#[derive(Debug, Parser)]
#[command(name = "sshd-gsi", version)]
pub struct Cli {
    /// Config file.
    #[arg(short = 'f', long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Check the configuration (config file, host keys, trust store, mapping files), print
    /// the effective configuration and exit: 0 usable, 1 not.
    #[arg(short = 't', long)]
    pub check_config: bool,
    /// Development mode: unprivileged, on 127.0.0.1:2222, with a generated dev CA, user
    /// certificate, token issuer and host key in the state directory; prints how to log in.
    #[arg(long)]
    pub dev: bool,
    /// State directory of --dev [default: $XDG_STATE_HOME/hpccert-dev or ~/.local/state/hpccert-dev].
    #[arg(long, value_name = "DIR", requires = "dev")]
    pub state_dir: Option<PathBuf>,
    /// Listen on this address instead of the configured ones (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// Debug logging (or set HPCCERT_LOG, e.g. HPCCERT_LOG=debug).
    #[arg(short, long)]
    pub debug: bool,
}
