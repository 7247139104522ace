//! Proving that the logged-in person owns a local account: the account's password through
//! PAM (service `mapping-portal` by default), or the site's single sign-on proxy naming the
//! account in a header (believed only from `trusted_proxies`). Failed attempts are limited per
//! account, per logged-in identity and per client address; the password is never stored or
//! logged and is wiped from memory after use.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hpccert_core::gridmap::AccountName;
use hpccert_pam_appl::{self as libpam, Conversation, Pam};
use thiserror::Error;
use zeroize::Zeroizing;

/// Failed attempts allowed within `WINDOW` ...
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// ... for one account,
const PER_ACCOUNT: usize = 5;
/// ... by one logged-in identity,
const PER_IDENTITY: usize = 10;
/// ... from one client address.
const PER_ADDRESS: usize = 20;

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

/// The local account `name`, checked: it exists, and its uid is not a system account's.
pub fn local_account(name: &str, min_uid: u32) -> Result<AccountName, ProofError> {
    let account = AccountName::parse(name).map_err(|_| ProofError::BadName(name.to_string()))?;
    let uid = hpccert_core::mapping::system_uid(name)
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
    pam.authenticate(libpam::PAM_SILENT | libpam::PAM_DISALLOW_NULL_AUTHTOK)
        .map_err(refused)?;
    pam.acct_mgmt(libpam::PAM_SILENT).map_err(refused)
}

/// Failed attempts by key, within `WINDOW`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// The keys one attempt counts against, with their limits.
pub fn attempt_keys(account: &str, identity: &str, addr: IpAddr) -> [(String, usize); 3] {
    [
        (format!("account {account}"), PER_ACCOUNT),
        (format!("identity {identity}"), PER_IDENTITY),
        (format!("address {addr}"), PER_ADDRESS),
    ]
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
    fn the_address_limit_spans_accounts() {
        let limiter = RateLimiter::default();
        let t = Instant::now();
        let addr: IpAddr = [198, 51, 100, 7].into();
        for i in 0..PER_ADDRESS {
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
