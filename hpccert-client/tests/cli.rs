//! The command line as a user meets it before any site is known: help that helps, `check`'s
//! exit codes, and refusals that say what to do. (Also: a workspace test run builds the
//! `hpccert` binary because of this file, which the portal's end-to-end test runs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Output};

fn hpccert(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hpccert"))
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_names_the_commands_and_an_example() {
    let home = tempfile::tempdir().unwrap();
    let o = hpccert(home.path(), &["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for word in [
        "login",
        "status",
        "check",
        "logout",
        "ssh-config",
        "token",
        "hpccert check || hpccert login",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
}

#[test]
fn before_any_login_commands_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    // check: 2 (an error: no site at all), silently
    let o = hpccert(home.path(), &["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    // status names the first login
    let o = hpccert(home.path(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("hpccert login https://portal.example.org"),
        "{}",
        stderr(&o)
    );
    // a plain-http portal elsewhere than this machine is refused before any request
    let o = hpccert(home.path(), &["login", "http://portal.example.org"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("https"), "{}", stderr(&o));
    // an unknown site name
    let o = hpccert(home.path(), &["login", "nosuchsite"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no site named \"nosuchsite\""),
        "{}",
        stderr(&o)
    );
    // --client-credentials needs a client id (clap says so)
    let o = hpccert(
        home.path(),
        &["login", "https://p.example", "--client-credentials"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--client-id"), "{}", stderr(&o));
    // nothing was written for a refused login
    assert!(!home.path().join(".ssh").exists());
}
