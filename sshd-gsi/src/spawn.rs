//! Starting a session's process as the mapped account: the one place where sshd-gsi changes
//! privileges.
//!
//! The account's supplementary groups are resolved before the fork ([`Account::lookup`]:
//! `getgrouplist`, which goes through NSS: sssd, LDAP, nss_hpccert take locks and allocate,
//! which a child forked from a multi-threaded server must never do). In the child, between
//! fork and exec, only async-signal-safe calls: every descriptor above stderr marked
//! close-on-exec, a new session (`setsid`), the PTY as controlling terminal when there is one,
//! then `setgroups` with the resolved list, `setgid`, `setuid`, each checked, and a final
//! check that the real and effective ids are the account's and that root cannot be regained.
//! Any failure aborts the exec: the session gets an error, never a process with the wrong
//! identity.
#![allow(unsafe_code)] // the pre-exec hook and PTY ioctls are FFI by nature; each block says why it is sound

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::unistd::{Gid, Uid, User};

/// The account a session runs as, read from the system's account database.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// The supplementary groups (with the primary group), resolved at lookup, before any fork.
    pub groups: Vec<Gid>,
}

impl Account {
    /// Look the account up; an account without a passwd entry cannot log in.
    pub fn lookup(name: &str) -> Result<Self, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("cannot look up account {name}: {e}"))?
            .ok_or_else(|| format!("account {name} does not exist on this host"))?;
        let shell = if user.shell.as_os_str().is_empty() {
            PathBuf::from("/bin/sh")
        } else {
            user.shell
        };
        let c_name = CString::new(user.name.clone())
            .map_err(|_| format!("account name {name:?} contains NUL"))?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(|e| format!("cannot resolve the groups of account {name}: {e}"))?;
        Ok(Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            shell,
            groups,
        })
    }

    /// The record the server hands the PAM helper (see [`crate::pam_proto::Request`]).
    pub fn record(&self) -> crate::pam_proto::AccountRecord {
        crate::pam_proto::AccountRecord {
            name: self.name.clone(),
            uid: self.uid.as_raw(),
            gid: self.gid.as_raw(),
            home: self.home.clone(),
            shell: self.shell.clone(),
            groups: self.groups.iter().map(|g| g.as_raw()).collect(),
        }
    }

    /// Whether this process can start processes as the account: as root any account; as
    /// anyone else (dev mode) only its own account.
    pub fn can_switch_to(&self) -> Result<(), String> {
        let me = nix::unistd::geteuid();
        if me.is_root() || me == self.uid {
            Ok(())
        } else {
            Err(format!(
                "sshd-gsi runs as uid {me}, not root: it can start sessions only for its own account, not {}",
                self.name
            ))
        }
    }
}

/// A PTY pair for a session.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: String,
}

/// The group that owns session terminals (as sshd's `pty_setowner`: `tty` when it exists).
fn tty_group() -> Option<Gid> {
    nix::unistd::Group::from_name("tty")
        .ok()
        .flatten()
        .map(|g| g.gid)
}

impl Pty {
    /// Give the terminal to the account, as sshd does: owner the account, group `tty` with mode
    /// 0620 (others in group tty, `write` and `wall`, may write to it; `mesg` works), or the
    /// account's group with 0600 where there is no tty group. Only root can; a server running
    /// as the account itself (`--dev`) already owns its PTYs.
    pub fn give_to(&self, account: &Account) -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let (group, mode) = match tty_group() {
            Some(g) => (g, 0o620),
            None => (account.gid, 0o600),
        };
        nix::unistd::fchown(&self.slave, Some(account.uid), Some(group))
            .map_err(|e| format!("chown {}: {e}", self.slave_path))?;
        nix::sys::stat::fchmod(&self.slave, nix::sys::stat::Mode::from_bits_truncate(mode))
            .map_err(|e| format!("chmod {}: {e}", self.slave_path))
    }

    pub fn open(cols: u32, rows: u32, px: u32, py: u32) -> Result<Self, String> {
        let ws = winsize(cols, rows, px, py);
        let OpenptyResult { master, slave } =
            openpty(Some(&ws), None).map_err(|e| format!("openpty: {e}"))?;
        let slave_path = nix::unistd::ttyname(&slave)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(Self {
            master,
            slave,
            slave_path,
        })
    }
}

/// Give a session's terminal back to root at the end of the session, as sshd's `pty_release`
/// (root:root, 0666), so that nothing of the account's stays on it while the device lives.
pub fn release_pty(slave_path: &str) {
    if slave_path.is_empty() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let root = (Some(Uid::from_raw(0)), Some(Gid::from_raw(0)));
    // the node is gone once the last descriptor of the pair is closed: nothing to give back
    if nix::unistd::chown(slave_path, root.0, root.1).is_ok() {
        let _ = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            slave_path,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
}

fn winsize(cols: u32, rows: u32, px: u32, py: u32) -> Winsize {
    let c = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    Winsize {
        ws_col: c(cols),
        ws_row: c(rows),
        ws_xpixel: c(px),
        ws_ypixel: c(py),
    }
}

/// Tell the terminal (and so the session's programs, through SIGWINCH) its new size.
pub fn resize(master: &OwnedFd, cols: u32, rows: u32, px: u32, py: u32) -> Result<(), String> {
    let ws = winsize(cols, rows, px, py);
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points to a live,
    // initialised Winsize for the duration of the call; the fd is an open PTY master.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const Winsize) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("TIOCSWINSZ: {}", std::io::Error::last_os_error()))
    }
}

/// Prepare `cmd` to run as `account`: privileges dropped in the child, then the working
/// directory changed to the home directory (as the account, so a root-squashed NFS home
/// works; `/` when it cannot be entered, as sshd), and for a PTY session a new session with
/// the PTY as controlling terminal.
pub fn as_account(
    cmd: &mut std::process::Command,
    account: &Account,
    with_pty: bool,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    account.can_switch_to()?;
    let groups: Vec<libc::gid_t> = account.groups.iter().map(|g| g.as_raw()).collect();
    let home = CString::new(account.home.clone().into_os_string().into_vec())
        .map_err(|_| "home directory contains NUL".to_string())?;
    let (uid, gid) = (account.uid, account.gid);
    let switch = nix::unistd::geteuid().is_root();
    // SAFETY: the closure runs in the forked child before exec. It only calls
    // async-signal-safe functions (close_range, sigprocmask, setsid, ioctl, setgroups,
    // setgid, setuid, get*id, chdir) on values prepared before the fork (the group list was
    // resolved by Account::lookup: no NSS call, no lock, no allocation happens here).
    unsafe {
        cmd.pre_exec(move || {
            // no descriptor of the server reaches the session (those it inherited itself
            // included): every fd above stderr is closed at exec
            if libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // the PAM helper blocks the signals it forwards: the session starts with none
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if with_pty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if switch {
                drop_to(&groups, uid, gid)?;
            }
            if libc::chdir(home.as_ptr()) != 0 && libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// setgroups (the list resolved before the fork), setgid, setuid, and checks that they took
/// (called in the child: async-signal-safe calls only).
fn drop_to(groups: &[libc::gid_t], uid: Uid, gid: Gid) -> std::io::Result<()> {
    #[allow(clippy::useless_conversion)] // size_t and setgroups' count type differ between libcs
    // SAFETY: `groups` points to `groups.len()` initialised gid_t values that outlive the call.
    if unsafe { libc::setgroups(groups.len().try_into().unwrap_or(0), groups.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
    nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
    let ok = nix::unistd::getuid() == uid
        && nix::unistd::geteuid() == uid
        && nix::unistd::getgid() == gid
        && nix::unistd::getegid() == gid
        && (uid.is_root() || nix::unistd::setuid(Uid::from_raw(0)).is_err());
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other("privilege drop did not take"))
    }
}

/// The login environment sshd gives, plus the client's allowed variables and the identity.
pub fn base_environment(account: &Account) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| env.push((k.into(), v));
    set("USER", account.name.clone().into());
    set("LOGNAME", account.name.clone().into());
    set("HOME", account.home.clone().into_os_string());
    set("SHELL", account.shell.clone().into_os_string());
    let path = if account.uid.is_root() {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    };
    set("PATH", path.into());
    set(
        "MAIL",
        OsString::from_vec(format!("/var/mail/{}", account.name).into_bytes()),
    );
    env
}

/// Whether the client may set `name` (`LC_*` matches a prefix).
pub fn env_allowed(name: &str, allow: &[String]) -> bool {
    // never what the server itself sets or what steers the loader and the shell, whatever the
    // patterns say (the config check refuses such patterns; this holds even if one slips by)
    !name.is_empty()
        && !hpccert_core::config::env_protected(name)
        && allow.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => a == name,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_allow_list() {
        let allow = vec!["LANG".to_string(), "LC_*".to_string()];
        assert!(env_allowed("LANG", &allow));
        assert!(env_allowed("LC_ALL", &allow));
        assert!(!env_allowed("LD_PRELOAD", &allow));
        assert!(!env_allowed("LANGUAGE", &allow));
        assert!(!env_allowed("", &allow));
        // protected names, whatever the patterns admit
        let all = vec!["*".to_string(), "HPCCERT_IDENTITY".to_string()];
        assert!(env_allowed("EDITOR", &all));
        for name in [
            "HPCCERT_IDENTITY",
            "LD_PRELOAD",
            "PATH",
            "SSH_ORIGINAL_COMMAND",
            "BASH_ENV",
        ] {
            assert!(!env_allowed(name, &all), "{name}");
        }
    }

    #[test]
    fn a_non_root_server_serves_only_its_own_account() {
        let me = nix::unistd::geteuid();
        let mine = Account::lookup(&User::from_uid(me).unwrap().unwrap().name).unwrap();
        assert!(mine.can_switch_to().is_ok());
        if !me.is_root() {
            let root = Account::lookup("root").unwrap();
            assert!(root.can_switch_to().is_err());
        }
        assert!(Account::lookup("no-such-account-hpccert").is_err());
    }
}
