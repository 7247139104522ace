//! Proving that the logged-in person owns a local account: the account's password through
//! PAM (service `mapping-portal` by default), or the site's single sign-on proxy naming the
//! account in a header (believed only from `trusted_proxies`). The password is never stored or
//! logged and is wiped from memory after use.
//!
//! A stranger learns nothing about which accounts exist: an account that does not exist, a
//! system account (uid below `min_uid`), a wrong password, an account PAM does not let in and
//! a PAM module that changed the user all give the same page with the same status
//! ([`ProofError::public`], [`NOT_PROVED`]); the log keeps the reason. The attempt is counted
//! ([`RateLimiter`], [`attempt_keys`]) before the account is looked up, so an unknown account
//! costs an attempt as a wrong password does, and PAM runs for it too (with a password that
//! cannot be right, as OpenSSH does for an invalid user), so that the answer does not come
//! sooner than a wrong password's.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hpccert_core::identity::gridmap::AccountName;
use hpccert_pam_appl::{self as libpam, Conversation, Pam};
use thiserror::Error;
use zeroize::Zeroizing;

/// Failed attempts allowed within `WINDOW` ...
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// ... for one account by one logged-in identity,
const PER_ACCOUNT: usize = 5;
/// ... by one logged-in identity, whatever the account,
const PER_IDENTITY: usize = 10;
/// ... from one client address (an IPv6 /64), whatever the identity and account.
const PER_SOURCE: usize = 20;

/// What the user is told when an account is not proved, whatever the reason (see the module
/// documentation): the same words and the same status (403) for every one of them.
pub const NOT_PROVED: &str = "That account and password do not match.";

/// The user PAM runs for when the account named is unknown or a system account, so that
/// nothing is counted against a real one (root's `pam_faillock` tally, say).
const NO_ACCOUNT: &str = "hpccert-portal-no-such-account";
/// The password PAM is given then: it cannot be anyone's (OpenSSH's `badpw`).
const CANNOT_BE_RIGHT: &str = "\u{8}\n\r\u{7f}INCORRECT";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("{0:?} is not a valid account name")]
    BadName(String),
    #[error("there is no local account {0}")]
    NoAccount(String),
    #[error("account {name} has uid {uid}, below {min_uid}: system accounts cannot be linked")]
    SystemAccount {
        name: String,
        uid: u32,
        min_uid: u32,
    },
    #[error("wrong password for account {0}, or the account may not log in")]
    Refused(String),
    #[error("too many failed attempts; try again in {0} minutes")]
    RateLimited(u64),
    #[error("the account could not be checked: {0}")]
    Internal(String),
}

impl ProofError {
    /// What the user is told. An unknown account, a system account and a refused password (or
    /// account, or a changed user) are one answer, [`NOT_PROVED`], so that the page does not
    /// say which accounts exist; the `Display` text, with the precise reason, is for the log.
    /// A name that is not an account name's syntax and the rate limit (which counts before
    /// any lookup) say nothing about the host's accounts and are told as they are; an internal
    /// failure is told without its details (which name PAM's error).
    pub fn public(&self) -> String {
        match self {
            Self::NoAccount(_) | Self::SystemAccount { .. } | Self::Refused(_) => {
                NOT_PROVED.to_string()
            }
            Self::BadName(_) | Self::RateLimited(_) => self.to_string(),
            Self::Internal(_) => "The account could not be checked now; try again later.".into(),
        }
    }
}

/// The local account `name`, checked: it exists, and its uid is not a system account's.
pub fn local_account(name: &str, min_uid: u32) -> Result<AccountName, ProofError> {
    let account = AccountName::parse(name).map_err(|_| ProofError::BadName(name.to_string()))?;
    let uid = hpccert_core::identity::mapping::system_uid(name)
        .ok_or_else(|| ProofError::NoAccount(name.to_string()))?;
    if uid < min_uid {
        return Err(ProofError::SystemAccount {
            name: name.to_string(),
            uid,
            min_uid,
        });
    }
    Ok(account)
}

/// Answers every hidden prompt with the password and a visible one with the account name.
struct PasswordConversation {
    user: String,
    password: Zeroizing<String>,
}

impl Conversation for PasswordConversation {
    fn prompt(&mut self, echo: bool, _text: &str) -> Option<Zeroizing<String>> {
        Some(if echo {
            Zeroizing::new(self.user.clone())
        } else {
            self.password.clone()
        })
    }
    fn info(&mut self, text: &str) {
        tracing::debug!("PAM: {text}");
    }
    fn error(&mut self, text: &str) {
        tracing::info!("PAM: {text}");
    }
}

/// Run the PAM auth and account stacks of `service` for `user` (blocking: call from a
/// blocking thread). `rhost` is the client's address.
pub fn pam_check(
    service: &str,
    user: &AccountName,
    password: Zeroizing<String>,
    rhost: &str,
) -> Result<(), ProofError> {
    let conversation = PasswordConversation {
        user: user.to_string(),
        password,
    };
    let mut pam =
        Pam::start(service, user.as_str(), Box::new(conversation)).map_err(ProofError::Internal)?;
    pam.set_item(libpam::PAM_RHOST, rhost)
        .map_err(ProofError::Internal)?;
    let refused = |e: String| {
        tracing::info!(account = %user, "PAM refused: {e}");
        ProofError::Refused(user.to_string())
    };
    // authenticate refuses a PAM_USER changed by a module; it is read back after the account
    // stack too: the account proved is the account named, or none
    pam.authenticate(libpam::PAM_SILENT | libpam::PAM_DISALLOW_NULL_AUTHTOK)
        .map_err(refused)?;
    pam.acct_mgmt(libpam::PAM_SILENT).map_err(refused)?;
    pam.check_user("pam_acct_mgmt").map_err(refused)
}

/// The password proof of `account` (blocking: call from a blocking thread, after the attempt
/// was counted): the account exists and is not a system account (uid at least `min_uid`), and
/// PAM takes the password. For an unknown or system account, or an empty password, PAM still
/// runs, for `NO_ACCOUNT` with a password that cannot be right, so that the refusal takes
/// as long as a wrong password's (pam_unix's delay): neither the page nor the clock says which
/// it was. The error names the precise reason (for the log).
pub fn prove_password(
    service: &str,
    account: &AccountName,
    password: Zeroizing<String>,
    min_uid: u32,
    rhost: &str,
) -> Result<(), ProofError> {
    let refusal = match local_account(account.as_str(), min_uid) {
        Ok(_) if !password.is_empty() => return pam_check(service, account, password, rhost),
        Ok(_) => ProofError::Refused(account.to_string()),
        Err(e) => e,
    };
    let nobody = AccountName::parse(NO_ACCOUNT)
        .map_err(|e| ProofError::Internal(format!("{NO_ACCOUNT}: {e}")))?;
    match pam_check(
        service,
        &nobody,
        Zeroizing::new(CANNOT_BE_RIGHT.to_string()),
        rhost,
    ) {
        // PAM that cannot run fails every account alike, an unknown one too
        Err(ProofError::Internal(e)) => Err(ProofError::Internal(format!(
            "{e} (when refusing: {refusal})"
        ))),
        _ => Err(refusal),
    }
}

/// Failed attempts by key, within `WINDOW`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// The keys one attempt counts against, with their limits.
///
/// The account's counter is kept per logged-in identity, (account, identity), not per account
/// alone: a per-account lock would let anyone who can log in at the identity provider lock a
/// researcher out of linking their own account by guessing five times. One identity gets
/// `PER_ACCOUNT` guesses at one account and `PER_IDENTITY` in all, and one client address
/// `PER_SOURCE` whatever the identities (an IPv6 address counts as its /64, which one host
/// usually has whole), per 15 minutes. Guessing one account's password from many identities is
/// so bounded by the identities (each a login at the site's identity provider, in the log and
/// the audit) and the addresses the guesser has; a site that wants a lock per account whoever
/// guesses can put `pam_faillock` in the portal's PAM service, which then counts only the
/// attempts that reach PAM. Every key is counted before the account is looked up.
pub fn attempt_keys(account: &str, identity: &str, addr: IpAddr) -> [(String, usize); 3] {
    [
        // account names have no spaces: "account A by I" cannot be read two ways
        (format!("account {account} by {identity}"), PER_ACCOUNT),
        (format!("identity {identity}"), PER_IDENTITY),
        (format!("source {}", source(addr)), PER_SOURCE),
    ]
}

/// An IPv4 address, or the /64 of an IPv6 one (an IPv4-mapped one as IPv4).
fn source(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{}/64", Ipv6Addr::from(u128::from(a) & (u128::MAX << 64))),
        },
    }
}

impl RateLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserve an attempt: refused when any key is at its limit; otherwise counted as a
    /// failure until [`RateLimiter::succeeded`] takes it back (so that parallel attempts
    /// cannot all pass the check before any fails).
    pub fn begin(&self, keys: &[(String, usize)], now: Instant) -> Result<(), ProofError> {
        let mut map = self.lock();
        if map.len() > 100_000 {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let mut wait = Duration::ZERO;
        for (key, limit) in keys {
            let q = map.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                q.pop_front();
            }
            if q.len() >= *limit
                && let Some(first) = q.front()
            {
                wait = wait.max(WINDOW.saturating_sub(now.duration_since(*first)));
            }
        }
        if !wait.is_zero() {
            return Err(ProofError::RateLimited(wait.as_secs().div_ceil(60).max(1)));
        }
        for (key, _) in keys {
            map.entry(key.clone()).or_default().push_back(now);
        }
        Ok(())
    }

    /// The attempt begun at `at` succeeded: it does not count.
    pub fn succeeded(&self, keys: &[(String, usize)], at: Instant) {
        let mut map = self.lock();
        for (key, _) in keys {
            if let Some(q) = map.get_mut(key)
                && let Some(i) = q.iter().rposition(|t| *t == at)
            {
                q.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_account_and_forgiven_after_the_window() {
        let limiter = RateLimiter::default();
        let t = Instant::now();
        let addr: IpAddr = [192, 0, 2, 1].into();
        let keys = attempt_keys("alice", "op mallory", addr);
        for _ in 0..PER_ACCOUNT {
            limiter.begin(&keys, t).unwrap();
        }
        let e = limiter.begin(&keys, t).unwrap_err();
        assert_eq!(e, ProofError::RateLimited(15));
        // another account from the same identity is still allowed
        limiter
            .begin(&attempt_keys("bob", "op mallory", addr), t)
            .unwrap();
        // after the window, allowed again
        limiter.begin(&keys, t + WINDOW).unwrap();
    }

    #[test]
    fn a_success_is_not_counted() {
        let limiter = RateLimiter::default();
        let t = Instant::now();
        let keys = attempt_keys("alice", "op alice", [192, 0, 2, 1].into());
        for i in 0..(PER_ACCOUNT * 3) {
            let at = t + Duration::from_millis(i as u64);
            limiter.begin(&keys, at).unwrap();
            limiter.succeeded(&keys, at);
        }
    }

    #[test]
    fn one_identitys_guesses_do_not_lock_another_out_of_the_account() {
        let limiter = RateLimiter::default();
        let t = Instant::now();
        let mallory = attempt_keys("alice", "op mallory", [192, 0, 2, 66].into());
        for _ in 0..PER_ACCOUNT {
            limiter.begin(&mallory, t).unwrap();
        }
        assert!(matches!(
            limiter.begin(&mallory, t),
            Err(ProofError::RateLimited(_))
        ));
        // alice herself, from her own address, may still try her account
        let alice = attempt_keys("alice", "op alice", [198, 51, 100, 1].into());
        limiter.begin(&alice, t).unwrap();
        // mallory's identity is limited across accounts too
        for i in 0..(PER_IDENTITY - PER_ACCOUNT) {
            limiter
                .begin(
                    &attempt_keys(&format!("u{i}"), "op mallory", [192, 0, 2, 66].into()),
                    t,
                )
                .unwrap();
        }
        assert!(matches!(
            limiter.begin(
                &attempt_keys("bob", "op mallory", [192, 0, 2, 66].into()),
                t
            ),
            Err(ProofError::RateLimited(_))
        ));
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source(a), "2001:db8:1:2::/64");
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(other));
        assert_eq!(source("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }

    #[test]
    fn unknown_system_and_refused_accounts_are_told_alike() {
        let answers: Vec<String> = [
            ProofError::NoAccount("ghost".into()),
            ProofError::SystemAccount {
                name: "daemon".into(),
                uid: 1,
                min_uid: 1000,
            },
            ProofError::Refused("alice".into()),
        ]
        .iter()
        .map(ProofError::public)
        .collect();
        assert!(answers.iter().all(|a| a == NOT_PROVED), "{answers:?}");
        // the log keeps the reason
        assert!(
            ProofError::NoAccount("ghost".into())
                .to_string()
                .contains("no local account ghost")
        );
    }

    #[test]
    fn the_source_limit_spans_accounts() {
        let limiter = RateLimiter::default();
        let t = Instant::now();
        let addr: IpAddr = [198, 51, 100, 7].into();
        for i in 0..PER_SOURCE {
            // a new identity and account each time: only the address repeats
            limiter
                .begin(
                    &attempt_keys(&format!("a{i}"), &format!("op u{i}"), addr),
                    t,
                )
                .unwrap();
        }
        assert!(matches!(
            limiter.begin(&attempt_keys("z", "op z", addr), t),
            Err(ProofError::RateLimited(_))
        ));
    }

    #[test]
    fn system_and_unknown_accounts_are_refused() {
        assert!(matches!(
            local_account("root", 1000),
            Err(ProofError::SystemAccount { uid: 0, .. })
        ));
        assert!(matches!(
            local_account("no-such-user-hpccert", 1000),
            Err(ProofError::NoAccount(_))
        ));
        assert!(matches!(
            local_account("../x", 1000),
            Err(ProofError::BadName(_))
        ));
    }
}
