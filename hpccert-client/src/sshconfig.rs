//! `hpccert ssh-config`: the OpenSSH client configuration for a site's login hosts, and its
//! installation as a marked block in `~/.ssh/config`.
//!
//! The block: a `Match` that renews the certificate when it is about to expire
//! (`exec "hpccert check SITE || hpccert login SITE"`), then one `Host` per login host with
//! the key and certificate (a host on another port than 22, such as sshd-gsi's, gets the alias
//! `HOST-PORT`). Installing replaces the site's block (between its BEGIN and END lines) or
//! appends it, keeps everything else byte for byte, backs the old file up first, and refuses a
//! file it cannot read as lines of `Keyword value` (or one whose markers are unbalanced).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::files;

fn begin(site: &str) -> String {
    format!("# BEGIN hpccert {site} (hpccert ssh-config --install; replaced on each install)")
}
fn end(site: &str) -> String {
    format!("# END hpccert {site}")
}

/// The block for `site`.
pub fn render(
    site: &str,
    hosts: &[(String, u16)],
    key: &Path,
    cert: &Path,
    program: &str,
) -> String {
    let quote = |p: &Path| {
        let s = p.display().to_string();
        if s.contains(' ') {
            format!("\"{s}\"")
        } else {
            s
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut entries = String::new();
    for (host, port) in hosts {
        let alias = if *port == 22 {
            host.clone()
        } else {
            format!("{host}-{port}")
        };
        if names.contains(&alias) {
            continue;
        }
        names.push(alias.clone());
        entries.push_str(&format!("Host {alias}\n"));
        if alias != *host {
            entries.push_str(&format!("    HostName {host}\n    Port {port}\n"));
        }
        entries.push_str(&format!(
            "    IdentityFile {}\n    CertificateFile {}\n    IdentitiesOnly yes\n",
            quote(key),
            quote(cert)
        ));
    }
    let mut out = begin(site);
    out.push('\n');
    if !names.is_empty() {
        out.push_str(&format!(
            "Match host {} exec \"{program} check {site} --min-valid 5m || {program} login {site}\"\n",
            names.join(",")
        ));
    }
    out.push_str(&entries);
    out.push_str(&end(site));
    out.push('\n');
    out
}

/// `text` with the site's block replaced by `block` (or appended).
pub fn merge(text: &str, site: &str, block: &str) -> Result<String> {
    let (b, e) = (begin(site), end(site));
    let mut out = String::new();
    let mut inside = false;
    let mut replaced = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with(&format!("# BEGIN hpccert {site} ")) || trimmed == b {
            if inside || replaced {
                bail!("line {}: a second BEGIN of the hpccert {site} block", n + 1);
            }
            inside = true;
            continue;
        }
        if trimmed == e {
            if !inside {
                bail!(
                    "line {}: END of the hpccert {site} block without its BEGIN",
                    n + 1
                );
            }
            inside = false;
            replaced = true;
            out.push_str(block);
            continue;
        }
        if inside {
            continue;
        }
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let keyword = trimmed
                .split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or("");
            if keyword.is_empty() || !keyword.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!(
                    "line {}: {:?} is not an OpenSSH `Keyword value` line",
                    n + 1,
                    trimmed
                );
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if inside {
        bail!("the hpccert {site} block has no END line");
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(block);
    }
    Ok(out)
}

/// Install `block` into the OpenSSH config at `path` (backup at `path.hpccert-backup`).
pub fn install(path: &Path, site: &str, block: &str) -> Result<bool> {
    let old = match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = match &old {
        Some(b) => String::from_utf8(b.clone())
            .with_context(|| format!("{} is not UTF-8: left untouched", path.display()))?,
        None => String::new(),
    };
    let new = merge(&text, site, block).with_context(|| {
        format!(
            "{} cannot be read into blocks: left untouched",
            path.display()
        )
    })?;
    if new == text {
        return Ok(false);
    }
    if let Some(old) = &old {
        let backup = path.with_file_name(format!(
            "{}.hpccert-backup",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        files::write_private(&backup, old)?;
    }
    files::write_private(path, new.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn block() -> String {
        render(
            "hpc",
            &[("login.example".into(), 22), ("login.example".into(), 2222)],
            Path::new("/home/u/.ssh/hpccert/hpc"),
            Path::new("/home/u/.ssh/hpccert/hpc-cert.pub"),
            "hpccert",
        )
    }

    #[test]
    fn the_block_names_each_host_and_port_and_renews() {
        let b = block();
        assert!(b.contains("Match host login.example,login.example-2222 exec \"hpccert check hpc --min-valid 5m || hpccert login hpc\"\n"), "{b}");
        assert!(
            b.contains("Host login.example-2222\n    HostName login.example\n    Port 2222\n"),
            "{b}"
        );
        assert!(
            b.contains("    CertificateFile /home/u/.ssh/hpccert/hpc-cert.pub\n"),
            "{b}"
        );
    }

    #[test]
    fn installing_is_idempotent_and_keeps_the_rest() {
        let mine = "Host *\n    ServerAliveInterval 30\n\n# my comment\nHost old\n  User me\n";
        let once = merge(mine, "hpc", &block()).unwrap();
        assert!(once.starts_with(mine), "{once}");
        let twice = merge(&once, "hpc", &block()).unwrap();
        assert_eq!(once, twice);
        // a new block replaces the old one in place
        let other = render(
            "hpc",
            &[("x.example".into(), 22)],
            Path::new("/k"),
            Path::new("/c"),
            "hpccert",
        );
        let replaced = merge(&once, "hpc", &other).unwrap();
        assert!(replaced.contains("Host x.example") && !replaced.contains("login.example"));
        assert!(replaced.starts_with(mine));
    }

    #[test]
    fn a_file_it_cannot_read_is_refused() {
        for bad in [
            "Host a\n  {{ template }}\n",
            "# BEGIN hpccert hpc (x)\nHost a\n",
            "# END hpccert hpc\n",
        ] {
            assert!(merge(bad, "hpc", &block()).is_err(), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config");
        std::fs::write(&p, "Host a\n  {{ template }}\n").unwrap();
        assert!(install(&p, "hpc", &block()).is_err());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "Host a\n  {{ template }}\n"
        );
        std::fs::write(&p, "Host a\n  User b\n").unwrap();
        assert!(install(&p, "hpc", &block()).unwrap());
        assert_eq!(
            std::fs::read_to_string(d.path().join("config.hpccert-backup")).unwrap(),
            "Host a\n  User b\n"
        );
        assert!(
            !install(&p, "hpc", &block()).unwrap(),
            "unchanged the second time"
        );
    }
}
