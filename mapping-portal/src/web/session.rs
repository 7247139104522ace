//! Server-side sessions: the cookie holds only a random id (256 bits); the server keeps the
//! rest. Logging in replaces the session (a new id and a new CSRF token: a session id planted
//! before the login is worthless after it). Sessions end after `IDLE` without a request and
//! `LIFETIME` after they began; logins that have not come back from the identity provider end
//! after `PENDING`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::dnproof::Challenge;
use crate::model::{IdentityKey, IdentityProfile};

pub const IDLE: Duration = Duration::from_secs(30 * 60);
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
pub const PENDING: Duration = Duration::from_secs(10 * 60);
/// More sessions than this are not kept (the oldest go first): bounded memory.
const MAX_SESSIONS: usize = 50_000;
/// Logins started in one browser and not finished (several tabs).
const MAX_PENDING: usize = 4;

/// A random secret as URL-safe text (`bytes` bytes of the system's CSPRNG).
pub fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // OpenSSL's CSPRNG; if it ever fails, a constant would be a disaster: fail closed instead
    if openssl::rand::rand_bytes(&mut buf).is_err() {
        tracing::error!("the random number generator failed; refusing to make a secret");
        return String::new();
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// The logged-in person, as the identity provider described them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub issuer: String,
    pub subject: String,
    pub profile: IdentityProfile,
    /// `idp_name` (the institution), shown only.
    pub idp_name: Option<String>,
    /// The identities this login may link: the token identity (issuer, subject), the
    /// certificate DN the identity provider asserted when it parses, and the DNs proved in
    /// this session by signing a challenge.
    pub identities: Vec<IdentityKey>,
    /// Certificate DNs this login linked in an earlier session, proved then by signature: the
    /// links it made for them (only those) are shown and may be removed, but the DN is linked
    /// to nothing new without a new proof. Read at login.
    pub linked_dns: Vec<IdentityKey>,
    pub admin: bool,
}

impl User {
    /// The name this login has in the audit log and in `links.linked_by`.
    pub fn actor_name(&self) -> String {
        actor_name(&self.issuer, &self.subject)
    }

    /// The DNs known to this login only from its earlier links: of these, it sees and may
    /// remove only the links it made.
    pub fn earlier_dns(&self) -> impl Iterator<Item = &IdentityKey> {
        self.linked_dns
            .iter()
            .filter(|k| !self.identities.contains(k))
    }
}

/// The audit log's name of the token identity (`issuer`, `subject`).
pub fn actor_name(issuer: &str, subject: &str) -> String {
    format!("token {issuer:?} {subject:?}")
}

/// A login on its way through the identity provider.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    pub started: Instant,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    pub user: Option<User>,
    /// By OAuth `state`.
    pub pending: HashMap<String, PendingLogin>,
    /// A one-time message for the next page.
    pub flash: Option<String>,
    /// The challenge a certificate DN is proved with (`[portal] certificate_dns`).
    pub dn_challenge: Option<Challenge>,
    created: Instant,
    seen: Instant,
}

impl Session {
    fn new(now: Instant) -> Self {
        Self {
            csrf: random_text(32),
            user: None,
            pending: HashMap::new(),
            flash: None,
            dn_challenge: None,
            created: now,
            seen: now,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.seen) > IDLE || now.duration_since(self.created) > LIFETIME
    }
}

/// The session table, keyed by the SHA-256 of the id (a lookup never compares the secret).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    openssl::sha::sha256(id.as_bytes())
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session: its id (for the cookie) and a copy.
    pub fn create(&self, now: Instant) -> Option<(String, Session)> {
        let id = random_text(32);
        if id.is_empty() {
            return None;
        }
        let session = Session::new(now);
        if session.csrf.is_empty() {
            return None;
        }
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !s.expired(now));
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(key(&id), session.clone());
        Some((id, session))
    }

    /// The live session of `id` (its last use updated), or `None`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let k = key(id);
        let session = map.get_mut(&k)?;
        if session.expired(now) {
            map.remove(&k);
            return None;
        }
        session.seen = now;
        session
            .pending
            .retain(|_, p| now.duration_since(p.started) <= PENDING);
        Some(session.clone())
    }

    /// Change the session of `id` (when it is still live).
    pub fn update<R>(
        &self,
        id: &str,
        now: Instant,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        let mut map = self.lock();
        let session = map.get_mut(&key(id))?;
        if session.expired(now) {
            return None;
        }
        Some(f(session))
    }

    /// Remember a login in progress (the oldest is dropped beyond `MAX_PENDING`).
    pub fn add_pending(&self, id: &str, now: Instant, state: String, login: PendingLogin) -> bool {
        self.update(id, now, |s| {
            if s.pending.len() >= MAX_PENDING
                && let Some(oldest) = s
                    .pending
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(k, _)| k.clone())
            {
                s.pending.remove(&oldest);
            }
            s.pending.insert(state, login);
        })
        .is_some()
    }

    /// Take (once) the pending login of `state`: a second callback with the same state finds
    /// nothing.
    pub fn take_pending(&self, id: &str, now: Instant, state: &str) -> Option<PendingLogin> {
        self.update(id, now, |s| s.pending.remove(state))
            .flatten()
            .filter(|p| now.duration_since(p.started) <= PENDING)
    }

    /// The session's live DN challenge, made with `make` when it has none (or it expired;
    /// `make` may fail to make one).
    pub fn dn_challenge(
        &self,
        id: &str,
        now: Instant,
        make: impl FnOnce() -> Option<Challenge>,
    ) -> Option<Challenge> {
        self.update(id, now, |s| {
            if s.dn_challenge.as_ref().is_none_or(|c| c.expired(now)) {
                s.dn_challenge = make();
            }
            s.dn_challenge.clone()
        })
        .flatten()
    }

    /// Take (once) the session's DN challenge: every answer, right or wrong, uses it up.
    pub fn take_dn_challenge(&self, id: &str, now: Instant) -> Option<Challenge> {
        self.update(id, now, |s| s.dn_challenge.take())
            .flatten()
            .filter(|c| !c.expired(now))
    }

    /// Add a proved identity to the logged-in user of `id`.
    pub fn add_identity(&self, id: &str, now: Instant, identity: IdentityKey) -> bool {
        self.update(id, now, |s| match &mut s.user {
            Some(user) => {
                if !user.identities.contains(&identity) {
                    user.identities.push(identity);
                }
                true
            }
            None => false,
        })
        .unwrap_or(false)
    }

    /// End the session of `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    /// Replace the session of `old` by a new one for `user` (a new id, a new CSRF token).
    pub fn login(&self, old: &str, now: Instant, user: User) -> Option<String> {
        self.remove(old);
        let (id, _) = self.create(now)?;
        self.update(&id, now, |s| s.user = Some(user))?;
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            issuer: "https://op".into(),
            subject: "alice".into(),
            profile: IdentityProfile::default(),
            idp_name: None,
            identities: vec![],
            linked_dns: vec![],
            admin: false,
        }
    }

    #[test]
    fn login_rotates_the_id_and_the_csrf_token() {
        let sessions = Sessions::default();
        let t = Instant::now();
        let (old, before) = sessions.create(t).unwrap();
        let new = sessions.login(&old, t, user()).unwrap();
        assert_ne!(old, new);
        assert!(sessions.get(&old, t).is_none(), "the old id is dead");
        let after = sessions.get(&new, t).unwrap();
        assert_ne!(before.csrf, after.csrf);
        assert_eq!(after.user.unwrap().subject, "alice");
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_end() {
        let sessions = Sessions::default();
        let t = Instant::now();
        let (id, _) = sessions.create(t).unwrap();
        assert!(
            sessions
                .get(&id, t + IDLE - Duration::from_secs(1))
                .is_some()
        );
        assert!(sessions.get(&id, t + IDLE * 2).is_none());
        let (id, _) = sessions.create(t).unwrap();
        let mut at = t;
        while at < t + LIFETIME {
            at += IDLE / 2;
            let _ = sessions.get(&id, at);
        }
        assert!(sessions.get(&id, at + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_pending_login_is_taken_once_and_expires() {
        let sessions = Sessions::default();
        let t = Instant::now();
        let (id, _) = sessions.create(t).unwrap();
        let p = PendingLogin {
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            started: t,
        };
        assert!(sessions.add_pending(&id, t, "s1".into(), p.clone()));
        assert!(sessions.take_pending(&id, t, "s2").is_none());
        assert!(sessions.take_pending(&id, t, "s1").is_some());
        assert!(sessions.take_pending(&id, t, "s1").is_none(), "replay");
        assert!(sessions.add_pending(&id, t, "s3".into(), p));
        assert!(sessions.take_pending(&id, t + PENDING * 2, "s3").is_none());
    }

    #[test]
    fn a_dn_challenge_is_kept_until_used_once_or_expired() {
        use super::super::dnproof::CHALLENGE_LIFETIME;
        let sessions = Sessions::default();
        let t = Instant::now();
        let (id, _) = sessions.create(t).unwrap();
        let make = |n: &str, at| Some(Challenge::new("o", "i", "s", n, at));
        let first = sessions.dn_challenge(&id, t, || make("1", t)).unwrap();
        let again = sessions.dn_challenge(&id, t, || make("2", t)).unwrap();
        assert_eq!(
            first, again,
            "the page shows the same challenge until it is used"
        );
        assert_eq!(sessions.take_dn_challenge(&id, t), Some(first));
        assert_eq!(sessions.take_dn_challenge(&id, t), None, "used once");
        let later = t + CHALLENGE_LIFETIME + Duration::from_secs(1);
        sessions.dn_challenge(&id, t, || make("3", t)).unwrap();
        assert_eq!(sessions.take_dn_challenge(&id, later), None, "expired");
        assert_eq!(sessions.dn_challenge(&id, t, || None), None, "none made");
    }

    #[test]
    fn proved_identities_join_the_logged_in_user_once() {
        let sessions = Sessions::default();
        let t = Instant::now();
        let (anon, _) = sessions.create(t).unwrap();
        let dn = IdentityKey::dn("/DC=org/DC=example/CN=Alice").unwrap();
        assert!(
            !sessions.add_identity(&anon, t, dn.clone()),
            "nobody logged in"
        );
        let id = sessions.login(&anon, t, user()).unwrap();
        assert!(sessions.add_identity(&id, t, dn.clone()));
        assert!(sessions.add_identity(&id, t, dn.clone()));
        let identities = sessions.get(&id, t).unwrap().user.unwrap().identities;
        assert_eq!(identities, vec![dn]);
    }
}
