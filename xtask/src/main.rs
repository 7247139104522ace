//! Build tasks of the workspace (`cargo xtask TASK`, matklad's xtask convention).
//!
//! `cargo xtask man DIR` writes the man pages of `sshd-gsi` and `gridmap-tool` (section 8,
//! one page per subcommand, `gridmap-tool-keys-refresh.8` ...) generated from their clap
//! definitions; `cargo xtask completions DIR` writes their bash, zsh and fish completions
//! (`DIR/bash/NAME`, `DIR/zsh/_NAME`, `DIR/fish/NAME.fish`). `packaging/build-packages.sh`
//! runs both before cargo-deb and cargo-generate-rpm.
//!
//! The command-line files are included from the binaries' sources (they depend only on clap and
//! hpccert-core), so the pages describe exactly the options the binaries parse.
#![forbid(unsafe_code)]

// Included for their clap definitions only: the fields are read by the binaries, not here.
#[allow(dead_code, missing_debug_implementations)]
#[path = "../../sshd-gsi/src/cli.rs"]
mod sshd_gsi_cli;

#[allow(dead_code, missing_debug_implementations)]
#[path = "../../gridmap-tool/src/cli.rs"]
mod gridmap_tool_cli;

#[allow(dead_code, missing_debug_implementations)]
#[path = "../../mapping-portal/src/cli.rs"]
mod mapping_portal_cli;

#[allow(dead_code, missing_debug_implementations)]
#[path = "../../hpccert-client/src/cli.rs"]
mod hpccert_client_cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::CommandFactory;

/// The man section of the daemons and the admin tool: system administration commands (they
/// live in /usr/sbin); the user's client `hpccert` is a user command (section 1, /usr/bin).
const ADMIN: &str = "8";
const USER: &str = "1";
const MANUAL: &str = "hpccert";

const USAGE: &str = "usage: cargo xtask man DIR | cargo xtask completions DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [task, dir] if task == "man" => man(Path::new(dir)),
        [task, dir] if task == "completions" => completions(Path::new(dir)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The programs whose pages and completions are generated, with the sections appended to
/// their main page.
fn programs() -> Vec<(clap::Command, &'static str, &'static str)> {
    vec![
        (sshd_gsi_cli::Cli::command(), SSHD_GSI_EXTRA, ADMIN),
        (gridmap_tool_cli::Cli::command(), GRIDMAP_TOOL_EXTRA, ADMIN),
        (
            mapping_portal_cli::Cli::command(),
            MAPPING_PORTAL_EXTRA,
            ADMIN,
        ),
        (hpccert_client_cli::Cli::command(), HPCCERT_EXTRA, USER),
    ]
}

fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (cmd, extra, section) in programs() {
        let mut cmd = cmd;
        cmd.build();
        let name = cmd.get_name().to_string();
        write_pages(dir, &cmd, &name, extra, section)?;
    }
    Ok(())
}

/// One page for `cmd` (written as `page_name.8`) and, recursively, one per visible subcommand
/// (`gridmap-tool-keys-refresh`).
fn write_pages(
    dir: &Path,
    cmd: &clap::Command,
    page_name: &str,
    extra: &str,
    section: &str,
) -> anyhow::Result<()> {
    let version = cmd
        .get_version()
        .unwrap_or(env!("CARGO_PKG_VERSION"))
        .to_string();
    let mut out: Vec<u8> = Vec::new();
    // after Command::build, a subcommand's display name is "gridmap-tool-keys-refresh", which
    // clap_mangen puts into NAME and .TH
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual(MANUAL)
        .source(format!("hpccert {version}"))
        .render(&mut out)
        .with_context(|| format!("cannot render the page of {page_name}"))?;
    out.extend_from_slice(extra.as_bytes());
    let path = dir.join(format!("{page_name}.{section}"));
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = sub
            .get_display_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{page_name}-{}", sub.get_name()));
        let see_also = format!(".SH \"SEE ALSO\"\n\\fB{page_name}\\fR({section})\n");
        write_pages(dir, sub, &sub_name, &see_also, section)?;
    }
    Ok(())
}

fn completions(dir: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    for (shell, sub) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let out = dir.join(sub);
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        for (cmd, _, _) in programs() {
            let mut cmd = cmd;
            let name = cmd.get_name().to_string();
            let written: PathBuf = clap_complete::generate_to(shell, &mut cmd, &name, &out)
                .with_context(|| format!("cannot write the {sub} completion of {name}"))?;
            // bash-completion looks the file up by the command's name, without a suffix
            if shell == Shell::Bash {
                let plain = out.join(&name);
                if written != plain {
                    std::fs::rename(&written, &plain)
                        .with_context(|| format!("cannot rename {}", written.display()))?;
                }
            }
        }
    }
    if !dir.join("bash/sshd-gsi").is_file() {
        bail!("the bash completion of sshd-gsi was not written");
    }
    Ok(())
}

/// Appended to sshd-gsi(8): what clap does not know.
const SSHD_GSI_EXTRA: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Re-read the configuration and everything the decisions read (trust store, CRLs, grid-mapfile,
token map, issuer keys), and empty the credential cache (\fB[sshd] credential_cache_ttl\fR). A
configuration that does not load is refused, logged, and the running one kept. Changes of \fB[sshd] listen\fR need a restart.
.TP
\fBSIGTERM\fR
Stop accepting connections and wait for the open sessions to end; a second SIGTERM ends them.
.SH ENVIRONMENT
.TP
\fBHPCCERT_LOG\fR
Log filter, e.g. \fBdebug\fR or \fBinfo,russh=warn\fR.
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for \fBType=notify\fR: sshd-gsi reports READY=1, RELOADING=1 and STOPPING=1.
.SH "EXIT STATUS"
0 on a clean stop or a usable configuration (\fB\-\-check\-config\fR), 1 on any error, 2 on a
usage error.
.SH FILES
.TP
\fI/etc/hpccert/hpccert.toml\fR
The configuration shared by every hpccert component (section \fB[sshd]\fR for this server).
.TP
\fI/etc/hpccert/ssh_host_ed25519_key\fR
The host key (made by the package when missing).
.TP
\fI/etc/grid-security/certificates\fR
The IGTF trust directory: CA certificates, CRLs, namespaces and signing policies.
.TP
\fI/etc/grid-security/grid-mapfile\fR
DN to account mappings.
.TP
\fI/var/cache/hpccert/issuer-keys\fR
Cached token issuer keys (\fBgridmap-tool keys refresh\fR).
.TP
\fI/var/log/hpccert/audit.jsonl\fR
The audit stream, when \fB[sshd] audit_log\fR names it.
.TP
\fI/run/hpccert/session-tokens\fR
The credentials handed to sessions (\fB[sshd] session_token_dir\fR), one private directory per
login: the token of a token login (\fBBEARER_TOKEN_FILE\fR, \fB[sshd] session_token\fR) and
the proxy a client handed over in the \fBenv\fR request \fBX509_USER_PROXY_PEM\fR after an
X.509 login (\fBX509_USER_PROXY\fR, \fB[sshd] x509_proxy_handover\fR, off by default),
removed when the last session holding them ends.
.TP
\fI/lib/systemd/system/sshd-gsi.service\fR
The systemd unit; \fBsystemctl reload sshd-gsi\fR checks the configuration and sends SIGHUP.
.SH "SEE ALSO"
\fBgridmap-tool\fR(8), \fBpam_hpccert\fR(8), \fBlibnss_hpccert\fR(8), \fBsshd\fR(8)
"#;

/// Appended to gridmap-tool(8).
const GRIDMAP_TOOL_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/hpccert/hpccert.toml\fR
The configuration (built-in defaults when it does not exist); the global options override it.
.TP
\fI/etc/grid-security/grid-mapfile\fR
The default grid-mapfile; edits lock \fIFILE.lock\fR and replace the file atomically.
.TP
\fI/var/cache/hpccert/issuer-keys\fR
The issuer key cache written by \fBkeys refresh\fR (run by \fBgridmap-tool-keys-refresh.timer\fR).
.SH "SEE ALSO"
\fBsshd-gsi\fR(8), \fBpam_hpccert\fR(8), \fBlibnss_hpccert\fR(8)
"#;

const MAPPING_PORTAL_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/hpccert/portal.toml\fR
The portal's configuration (mode 0640, group hpccert-portal: it holds the OIDC client secret and the export tokens).
.TP
\fI/etc/pam.d/mapping-portal\fR
The PAM service that checks a local account's password when a user proves the account.
.TP
\fI/var/lib/hpccert-portal/portal.db\fR
The default SQLite database, created and migrated on first start.
.SH "SEE ALSO"
\fBgridmap-tool-sync\fR(8), \fBsshd-gsi\fR(8), \fBpam_hpccert\fR(8)
"#;

/// Appended to hpccert(1).
const HPCCERT_EXTRA: &str = r#".SH FILES
.TP
\fI~/.config/hpccert/config.toml\fR
The sites logged in to (\fB[site.NAME] portal = URL\fR) and the \fBdefault\fR one; the site's
discovery document beside it (\fINAME.json\fR), and the refresh token only with
\fB\-\-remember\fR (\fINAME.refresh\fR, mode 0600).
.TP
\fI~/.ssh/hpccert/NAME\fR, \fINAME.pub\fR, \fINAME\-cert.pub\fR
The site's key pair (0600, directory 0700) and its current certificate.
.TP
\fI$XDG_RUNTIME_DIR/hpccert/NAME.token\fR
The current access token (0600).
.TP
\fI$BEARER_TOKEN_FILE\fR, else \fI$XDG_RUNTIME_DIR/bt_u$UID\fR, else \fI/tmp/bt_u$UID\fR
Where \fBhpccert token \-\-write\fR puts the access token (WLCG bearer token discovery).
.SH ENVIRONMENT
.TP
\fBBROWSER\fR
The program that opens the login page; without it (and without a display, or over SSH) the
device code is shown instead.
.TP
\fBSSH_AUTH_SOCK\fR
The ssh\-agent the key and certificate are added to, for the certificate's validity.
.TP
\fBX509_USER_PROXY\fR
The grid proxy \fB\-\-x509\fR proves (else \fI/tmp/x509up_u$UID\fR).
.SH "EXIT STATUS"
0 on success, 1 on an error; \fBhpccert check\fR: 0 valid, 1 expired or absent, 2 error.
.SH "SEE ALSO"
\fBssh\fR(1), \fBssh\-add\fR(1), \fBssh_config\fR(5)
"#;
