//! Login records for PTY sessions, as sshd keeps them: utmp (who is logged in: `who`, `w`),
//! wtmp (the login history: `last`) and lastlog (`lastlog`, the "Last login" line). Written
//! only when running as root; a missing file is skipped, as glibc and sshd do (systemd
//! creates /run/utmp at boot).
#![allow(unsafe_code)] // utmpx is glibc's C API; each block says why it is sound

use std::ffi::{CString, c_char};
use std::io::{Seek, SeekFrom, Write};
use std::net::IpAddr;

const WTMP: &str = "/var/log/wtmp";
const LASTLOG: &str = "/var/log/lastlog";

unsafe extern "C" {
    // glibc: append one record to a wtmp file
    fn updwtmpx(file: *const c_char, ut: *const libc::utmpx);
}

/// One PTY session's record.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub pid: i32,
    /// `/dev/pts/3`
    pub tty: String,
    pub user: String,
    pub uid: u32,
    pub host: IpAddr,
}

fn copy(dst: &mut [c_char], src: &str) {
    for (d, s) in dst.iter_mut().zip(src.bytes()) {
        *d = s as c_char;
    }
}

fn now() -> (i64, i64) {
    let d = hpccert_core::clock::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(0),
        i64::from(d.subsec_micros()),
    )
}

impl LoginRecord {
    /// `pts/3`: the line, without `/dev/`.
    fn line(&self) -> &str {
        self.tty.strip_prefix("/dev/").unwrap_or(&self.tty)
    }

    fn utmpx(&self, login: bool) -> libc::utmpx {
        // SAFETY: utmpx is plain old data (integers and char arrays); all-zero is its empty
        // value, as glibc's own code initialises it.
        let mut ut: libc::utmpx = unsafe { std::mem::zeroed() };
        ut.ut_type = if login {
            libc::USER_PROCESS
        } else {
            libc::DEAD_PROCESS
        };
        ut.ut_pid = self.pid;
        let line = self.line();
        copy(&mut ut.ut_line, line);
        // the id: the line's last 4 characters, as login(1) and sshd use
        let id = &line[line.len().saturating_sub(4)..];
        copy(&mut ut.ut_id, id);
        if login {
            copy(&mut ut.ut_user, &self.user);
            copy(&mut ut.ut_host, &self.host.to_string());
            ut.ut_addr_v6 = match self.host {
                IpAddr::V4(a) => [i32::from_ne_bytes(a.octets()), 0, 0, 0],
                IpAddr::V6(a) => {
                    let o = a.octets();
                    let w = |i: usize| i32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                    [w(0), w(4), w(8), w(12)]
                }
            };
        }
        let (sec, usec) = now();
        ut.ut_tv.tv_sec = i32::try_from(sec).unwrap_or(i32::MAX);
        ut.ut_tv.tv_usec = i32::try_from(usec).unwrap_or(0);
        ut
    }

    fn write(&self, login: bool) {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let ut = self.utmpx(login);
        let Ok(wtmp) = CString::new(WTMP) else { return };
        // SAFETY: `ut` is a valid, initialised utmpx that outlives the calls; setutxent,
        // pututxline and endutxent are used in glibc's documented sequence from one task at
        // a time per record (glibc serialises access to the utmp file with a lock).
        unsafe {
            libc::setutxent();
            libc::pututxline(&ut);
            libc::endutxent();
            if std::path::Path::new(WTMP).exists() {
                updwtmpx(wtmp.as_ptr(), &ut);
            }
        }
    }

    /// The session started.
    pub fn login(&self) {
        self.write(true);
        self.lastlog();
    }

    /// The session ended.
    pub fn logout(&self) {
        self.write(false);
    }

    /// `struct lastlog { int32_t ll_time; char ll_line[32]; char ll_host[256]; }` at
    /// offset uid * 292 of /var/log/lastlog (a sparse file).
    fn lastlog(&self) {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(LASTLOG) else {
            return;
        };
        let mut rec = [0u8; 292];
        let (sec, _) = now();
        rec[..4].copy_from_slice(&i32::try_from(sec).unwrap_or(i32::MAX).to_ne_bytes());
        for (d, s) in rec[4..36].iter_mut().zip(self.line().bytes()) {
            *d = s;
        }
        for (d, s) in rec[36..292].iter_mut().zip(self.host.to_string().bytes()) {
            *d = s;
        }
        let offset = u64::from(self.uid) * 292;
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.write_all(&rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_the_line_user_and_host() {
        let r = LoginRecord {
            pid: 42,
            tty: "/dev/pts/17".into(),
            user: "alice".into(),
            uid: 1001,
            host: "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        };
        let ut = r.utmpx(true);
        let text = |a: &[c_char]| {
            a.iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8 as char)
                .collect::<String>()
        };
        assert_eq!(ut.ut_type, libc::USER_PROCESS);
        assert_eq!(text(&ut.ut_line), "pts/17");
        assert_eq!(text(&ut.ut_id), "s/17");
        assert_eq!(text(&ut.ut_user), "alice");
        assert_eq!(text(&ut.ut_host), "192.0.2.7");
        assert_eq!(ut.ut_addr_v6[0].to_ne_bytes(), [192, 0, 2, 7]);
        let out = r.utmpx(false);
        assert_eq!(out.ut_type, libc::DEAD_PROCESS);
        assert_eq!(text(&out.ut_user), "");
        assert_eq!(text(&out.ut_line), "pts/17");
    }
}
