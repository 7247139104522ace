//! What the sshd-gsi end-to-end test files share: the workspace's end-to-end helpers
//! (`hpccert-e2e`: the peers-or-skip convention, files with modes, the Python), and starting a
//! real `sshd-gsi` on a free loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // each test file uses a part

#[allow(unused_imports)] // each test file uses a part
pub use hpccert_e2e::{
    free_port, on_path, python_path, python_with, repo_root, required, skip, write_mode,
};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped (also when a test fails).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sshd-gsi -f CONFIG --listen 127.0.0.1:PORT` with its log in `log`, once it accepts
/// connections; None when the port was taken meanwhile (the caller tries another).
pub fn spawn_ready(config: &Path, port: u16, log: &Path, env: &[(&str, &Path)]) -> Option<Process> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sshd-gsi"));
    cmd.arg("-f")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HPCCERT_LOG", "info,russh=warn")
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Process(cmd.spawn().unwrap());
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let ready = format!("Server listening on 127.0.0.1 port {port}.");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(
                text().contains("cannot listen"),
                "sshd-gsi exited ({status}):\n{}",
                text()
            );
            return None;
        }
        if text().contains(&ready) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        assert!(
            Instant::now() < deadline,
            "sshd-gsi not ready after 15 s:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Run `cmd` (stdin null) with a deadline; a command still running then fails the test.
/// (exit code, stdout, stderr).
pub fn run_within(cmd: &mut Command, timeout: Duration) -> (i32, String, String) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    )
}
