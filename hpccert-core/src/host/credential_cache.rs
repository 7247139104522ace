//! The verified-credential cache of a login daemon: a chain or token that verified and mapped
//! a moment ago, presented again, is not verified again.
//!
//! An entry is found by the exact credential ([`CredentialKey`]): the bytes of the presented
//! chain as they came (compared in full on every hit), or the SHA-256 of a bearer token (the
//! token itself is never kept). It holds a [`Remembered`]: the proof of verification with the
//! [`Generation`] of what the verification read (the trust store with its CRLs and namespaces,
//! or the issuer's keys), and the last decision made from it with the generation of what the
//! mapping read (grid-mapfile, token map, suspension list, restrictions), for the login name
//! and client address it was made for. A generation is the set of loaded values the reads
//! returned: a reloaded file is a new value, so a changed source never matches an old entry.
//!
//! Nothing is reused past [`reuse_until`]: the credential's own end, the next update of a CRL
//! the verification read, and the configured time to live. Only successes are kept, and only
//! decisions that read nothing but their files ([`Decision::not_reusable`]): a pool lease or
//! an account named by a token claim is decided again at each login, from the remembered
//! proof. The cache is bounded: when full, the least recently used entry goes.
//!
//! Why exact bytes and not a digest for chains: a hit must cost at most 5% of the possession
//! proof it still needs (an RSA-2048 signature check, about 20 µs), and SHA-256 of a 2 KB key
//! blob costs about 1.2 µs on its own. The bucket is chosen by a keyed SipHash (random key per
//! process) of the blob's first bytes and its length; equality is then checked on every byte,
//! so a collision only shares a bucket, never an entry. Tokens are keyed by their SHA-256 so
//! that no bearer token stays in memory.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::identity::mapping::Decision;
use crate::trust::x509::format_unix;

/// Bytes of a chain's key that choose its bucket (the rest is compared on a hit): the start of
/// the first certificate, with its serial number, issuer, validity and subject.
const HASHED_PREFIX: usize = 512;

/// The exact credential an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKey<'a> {
    /// A certificate chain as presented (for SSH: the RFC 6187 key blob, algorithm included).
    Chain(&'a [u8]),
    /// A bearer token, by the SHA-256 of its text.
    Token([u8; 32]),
}

impl CredentialKey<'_> {
    /// The key of a bearer token: its SHA-256 digest.
    pub fn token(token: &str) -> CredentialKey<'static> {
        CredentialKey::Token(openssl::sha::sha256(token.as_bytes()))
    }

    fn kind(&self) -> u8 {
        match self {
            CredentialKey::Chain(_) => b'c',
            CredentialKey::Token(_) => b't',
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            CredentialKey::Chain(b) => b,
            CredentialKey::Token(d) => d,
        }
    }
}

/// What a verification or a decision read: the values its sources returned. Two generations
/// are the same when every source returned the same value (the same allocation: a reloaded
/// file is a new one). Entries hold weak references, so an old trust store is freed when the
/// daemon drops it, and its address cannot be taken by a new one while an entry remembers it.
#[derive(Debug, Clone, Default)]
pub struct Generation(Vec<Weak<dyn Any + Send + Sync>>);

impl Generation {
    pub fn new() -> Self {
        Self::default()
    }

    /// This generation and the value `source` returned.
    #[must_use]
    pub fn with<T: Any + Send + Sync>(mut self, source: &Arc<T>) -> Self {
        let weak: Weak<T> = Arc::downgrade(source);
        let weak: Weak<dyn Any + Send + Sync> = weak;
        self.0.push(weak);
        self
    }

    /// Whether `now` read the same values, source by source.
    pub fn is_current(&self, now: &Generation) -> bool {
        self.0.len() == now.0.len()
            && self
                .0
                .iter()
                .zip(&now.0)
                .all(|(a, b)| std::ptr::addr_eq(a.as_ptr(), b.as_ptr()))
    }
}

/// What ends the reuse of a verified credential first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReuseBound {
    /// The credential's own end: the earliest `notAfter` on the path, or the token's `exp`.
    Credential,
    /// The next update of a CRL the verification read.
    CrlUpdate,
    /// `[sshd] credential_cache_ttl`.
    Ttl,
}

/// Until when a verified credential may be reused, and why then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Reuse {
    /// Unix seconds; the credential is verified again at or after this time.
    pub until: i64,
    pub bound: ReuseBound,
}

impl Reuse {
    /// Seconds left at `now` (0 when over).
    pub fn seconds_left(&self, now: i64) -> i64 {
        (self.until - now).max(0)
    }

    /// In words, for logs and `explain`.
    pub fn describe(&self, now: i64) -> String {
        let why = match self.bound {
            ReuseBound::Credential => "when the credential ends",
            ReuseBound::CrlUpdate => "the next update of a CRL it was checked against",
            ReuseBound::Ttl => "[sshd] credential_cache_ttl",
        };
        format!(
            "{} s, until {} ({why})",
            self.seconds_left(now),
            format_unix(self.until)
        )
    }
}

/// How long a credential verified at `now` may be reused: until the first of its end
/// (`credential_end`), the next CRL update its verification read and `now + ttl`. None when
/// not at all (`ttl` 0, or nothing left). sshd-gsi's cache and `gridmap-tool explain` both
/// ask this function.
pub fn reuse_until(
    now: i64,
    credential_end: i64,
    crl_next_update: Option<i64>,
    ttl: u64,
) -> Option<Reuse> {
    if ttl == 0 {
        return None;
    }
    let mut reuse = Reuse {
        until: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        bound: ReuseBound::Ttl,
    };
    for (t, bound) in [
        (Some(credential_end), ReuseBound::Credential),
        (crl_next_update, ReuseBound::CrlUpdate),
    ] {
        if let Some(t) = t
            && t < reuse.until
        {
            reuse = Reuse { until: t, bound };
        }
    }
    (reuse.until > now).then_some(reuse)
}

/// What sshd-gsi's cache would do with `decision`, reusable as `reuse` says (from
/// [`reuse_until`]), in words: what `gridmap-tool explain` prints.
pub fn explain_reuse(reuse: Option<Reuse>, decision: &Decision, now: i64) -> String {
    match (reuse, decision.not_reusable()) {
        (None, _) => "sshd-gsi verifies this credential again at every login ([sshd] credential_cache_ttl or credential_cache_size is 0, or the credential ends now)".into(),
        (Some(r), Some(why)) => format!(
            "sshd-gsi would reuse the verification for {}, while what it read is unchanged; the account is decided again at each login: {why}",
            r.describe(now)
        ),
        (Some(r), None) => format!(
            "sshd-gsi would reuse this decision for {}, for the same login name and client address, while nothing it read changes (trust store and CRLs or issuer keys, grid-mapfile or token map, suspension list, restrictions)",
            r.describe(now)
        ),
    }
}

/// Which part of a decision came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromCache {
    /// The whole decision: verification and mapping.
    Decision,
    /// The verification only; the mapping was decided now (its files changed, another login
    /// name or address, or a decision that is never reused: a pool lease, a token claim).
    Verification,
}

impl FromCache {
    pub fn as_str(&self) -> &'static str {
        match self {
            FromCache::Decision => "decision",
            FromCache::Verification => "verification",
        }
    }
}

impl fmt::Display for FromCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision remembered for one login name and client address (restrictions' `from=`
/// depend on it).
#[derive(Debug, Clone)]
struct RememberedDecision {
    user: String,
    from: IpAddr,
    mapped_under: Generation,
    decision: Decision,
}

/// A verified credential as the cache keeps it: the proof `P`, what its verification read,
/// how long it may be reused, and the last reusable decision made from it.
#[derive(Debug, Clone)]
pub struct Remembered<P> {
    proof: P,
    verified_under: Generation,
    reuse: Reuse,
    decision: Option<RememberedDecision>,
}

impl<P> Remembered<P> {
    pub fn new(proof: P, verified_under: Generation, reuse: Reuse) -> Self {
        Self {
            proof,
            verified_under,
            reuse,
            decision: None,
        }
    }

    /// This entry with `decision`, made for `user` from `from` under `mapped_under`; a
    /// decision that is [not reusable](Decision::not_reusable) is not kept.
    #[must_use]
    pub fn with_decision(
        mut self,
        user: &str,
        from: IpAddr,
        mapped_under: Generation,
        decision: &Decision,
    ) -> Self {
        self.decision = decision
            .not_reusable()
            .is_none()
            .then(|| RememberedDecision {
                user: user.to_string(),
                from,
                mapped_under,
                decision: decision.clone(),
            });
        self
    }

    /// The proof, without its generation: for what depends only on the credential's bytes (a
    /// public key for a possession proof), whatever happened to the trust since.
    pub fn proof_unchecked(&self) -> &P {
        &self.proof
    }

    /// The proof, if the verification read what is current now (`verified_now`) and `now` is
    /// before the end of its reuse.
    pub fn proof(&self, verified_now: &Generation, now: i64) -> Option<&P> {
        (now < self.reuse.until && self.verified_under.is_current(verified_now))
            .then_some(&self.proof)
    }

    /// The remembered decision, if it was made for `user` from `from` and the mapping read
    /// what is current now (`mapped_now`). Ask only after [`Remembered::proof`].
    pub fn decision(&self, user: &str, from: IpAddr, mapped_now: &Generation) -> Option<&Decision> {
        self.decision
            .as_ref()
            .filter(|d| d.user == user && d.from == from && d.mapped_under.is_current(mapped_now))
            .map(|d| &d.decision)
    }

    pub fn reuse(&self) -> Reuse {
        self.reuse
    }
}

struct Slot<V> {
    kind: u8,
    bytes: Box<[u8]>,
    until: i64,
    used: u64,
    value: Arc<V>,
}

struct Entries<V> {
    buckets: HashMap<u64, Vec<Slot<V>>>,
    len: usize,
    /// Counts uses: a slot's `used` is the count at its last use (least recent = smallest).
    uses: u64,
}

/// Remembered credentials, bounded, safe to share between concurrent logins (one short lock
/// per lookup: a hash, a comparison of the bytes, a reference count).
pub struct CredentialCache<V> {
    ttl: u64,
    capacity: usize,
    hasher: RandomState,
    entries: Mutex<Entries<V>>,
}

impl<V> fmt::Debug for CredentialCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<V> CredentialCache<V> {
    /// A cache of at most `capacity` credentials, each kept at most `ttl` seconds (either 0:
    /// nothing is kept).
    pub fn new(ttl: u64, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            hasher: RandomState::new(),
            entries: Mutex::new(Entries {
                buckets: HashMap::new(),
                len: 0,
                uses: 0,
            }),
        }
    }

    /// `[sshd] credential_cache_ttl`.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    pub fn is_enabled(&self) -> bool {
        self.ttl > 0 && self.capacity > 0
    }

    fn bucket(&self, key: &CredentialKey<'_>) -> u64 {
        let bytes = key.bytes();
        let head = bytes.get(..HASHED_PREFIX).unwrap_or(bytes);
        self.hasher.hash_one((key.kind(), bytes.len(), head))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        // every change below leaves the map consistent, so a panic elsewhere does not matter
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for exactly `key`, if it is there and `now` is before its end (an ended one
    /// is dropped).
    pub fn get(&self, key: CredentialKey<'_>, now: i64) -> Option<Arc<V>> {
        if !self.is_enabled() {
            return None;
        }
        let bucket = self.bucket(&key);
        let (kind, bytes) = (key.kind(), key.bytes());
        let mut guard = self.lock();
        let entries = &mut *guard;
        entries.uses += 1;
        let slots = entries.buckets.get_mut(&bucket)?;
        let i = slots
            .iter()
            .position(|s| s.kind == kind && *s.bytes == *bytes)?;
        if now >= slots[i].until {
            slots.swap_remove(i);
            if slots.is_empty() {
                entries.buckets.remove(&bucket);
            }
            entries.len -= 1;
            return None;
        }
        slots[i].used = entries.uses;
        Some(Arc::clone(&slots[i].value))
    }

    /// Keep `value` for `key` until `until` (replacing what was there); when full, the least
    /// recently used entry goes first.
    pub fn insert(&self, key: CredentialKey<'_>, until: i64, value: V) {
        if !self.is_enabled() {
            return;
        }
        let bucket = self.bucket(&key);
        let (kind, bytes) = (key.kind(), key.bytes());
        let value = Arc::new(value);
        let mut guard = self.lock();
        let entries = &mut *guard;
        entries.uses += 1;
        let uses = entries.uses;
        if let Some(slot) = entries.buckets.get_mut(&bucket).and_then(|slots| {
            slots
                .iter_mut()
                .find(|s| s.kind == kind && *s.bytes == *bytes)
        }) {
            slot.until = until;
            slot.used = uses;
            slot.value = value;
            return;
        }
        if entries.len >= self.capacity {
            Self::evict_least_recent(entries);
        }
        entries.buckets.entry(bucket).or_default().push(Slot {
            kind,
            bytes: bytes.into(),
            until,
            used: uses,
            value,
        });
        entries.len += 1;
    }

    /// Drop the least recently used entry: a scan, done only when a new credential arrives in
    /// a full cache (that login verifies in full, which costs far more).
    fn evict_least_recent(entries: &mut Entries<V>) {
        let oldest = entries
            .buckets
            .iter()
            .flat_map(|(b, slots)| slots.iter().enumerate().map(move |(i, s)| (s.used, *b, i)))
            .min();
        if let Some((_, bucket, i)) = oldest
            && let Some(slots) = entries.buckets.get_mut(&bucket)
        {
            slots.swap_remove(i);
            if slots.is_empty() {
                entries.buckets.remove(&bucket);
            }
            entries.len -= 1;
        }
    }

    /// Forget `key` (its verification failed, or it no longer holds).
    pub fn remove(&self, key: CredentialKey<'_>) {
        let bucket = self.bucket(&key);
        let (kind, bytes) = (key.kind(), key.bytes());
        let mut guard = self.lock();
        let entries = &mut *guard;
        if let Some(slots) = entries.buckets.get_mut(&bucket)
            && let Some(i) = slots
                .iter()
                .position(|s| s.kind == kind && *s.bytes == *bytes)
        {
            slots.swap_remove(i);
            if slots.is_empty() {
                entries.buckets.remove(&bucket);
            }
            entries.len -= 1;
        }
    }

    /// Entries held (ended ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget everything.
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.buckets.clear();
        entries.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    #[test]
    fn reuse_ends_at_the_first_bound() {
        let r = reuse_until(NOW, NOW + 1000, None, 300).unwrap();
        assert_eq!((r.until, r.bound), (NOW + 300, ReuseBound::Ttl));
        let r = reuse_until(NOW, NOW + 100, Some(NOW + 200), 300).unwrap();
        assert_eq!((r.until, r.bound), (NOW + 100, ReuseBound::Credential));
        let r = reuse_until(NOW, NOW + 1000, Some(NOW + 50), 300).unwrap();
        assert_eq!((r.until, r.bound), (NOW + 50, ReuseBound::CrlUpdate));
        assert_eq!(r.seconds_left(NOW), 50);
        assert!(
            r.describe(NOW).starts_with("50 s, until "),
            "{}",
            r.describe(NOW)
        );
        assert!(r.describe(NOW).contains("CRL"));
        // disabled, or nothing left
        assert!(reuse_until(NOW, NOW + 1000, None, 0).is_none());
        assert!(reuse_until(NOW, NOW, None, 300).is_none());
        assert!(reuse_until(NOW, NOW + 1000, Some(NOW - 1), 300).is_none());
    }

    #[test]
    fn entries_are_found_by_the_exact_bytes_until_they_end() {
        let c = CredentialCache::new(300, 10);
        let blob = vec![7u8; 2000];
        c.insert(CredentialKey::Chain(&blob), NOW + 10, "alice");
        assert_eq!(*c.get(CredentialKey::Chain(&blob), NOW).unwrap(), "alice");
        // the same first 512 bytes and length, one byte different at the end: another entry
        let mut other = blob.clone();
        other[1999] = 8;
        assert!(c.get(CredentialKey::Chain(&other), NOW).is_none());
        c.insert(CredentialKey::Chain(&other), NOW + 10, "mallory");
        assert_eq!(*c.get(CredentialKey::Chain(&blob), NOW).unwrap(), "alice");
        assert_eq!(
            *c.get(CredentialKey::Chain(&other), NOW).unwrap(),
            "mallory"
        );
        // a token whose digest happened to equal some bytes is another kind
        let t = CredentialKey::token("a.b.c");
        assert!(c.get(t, NOW).is_none());
        c.insert(t, NOW + 10, "token");
        assert_eq!(*c.get(CredentialKey::token("a.b.c"), NOW).unwrap(), "token");
        assert!(c.get(CredentialKey::token("a.b.d"), NOW).is_none());
        // at its end an entry is gone
        assert!(c.get(CredentialKey::Chain(&blob), NOW + 10).is_none());
        assert_eq!(c.len(), 2);
        c.remove(CredentialKey::Chain(&other));
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn full_cache_drops_the_least_recently_used() {
        let c = CredentialCache::new(300, 3);
        let keys: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        for k in &keys[..3] {
            c.insert(CredentialKey::Chain(k), NOW + 100, k[0]);
        }
        // use 0: then 1 is the least recent
        assert!(c.get(CredentialKey::Chain(&keys[0]), NOW).is_some());
        c.insert(CredentialKey::Chain(&keys[3]), NOW + 100, 3);
        assert_eq!(c.len(), 3);
        assert!(c.get(CredentialKey::Chain(&keys[1]), NOW).is_none());
        for i in [0, 2, 3] {
            assert!(c.get(CredentialKey::Chain(&keys[i]), NOW).is_some(), "{i}");
        }
        // replacing an entry does not grow the cache
        c.insert(CredentialKey::Chain(&keys[3]), NOW + 100, 33);
        assert_eq!(c.len(), 3);
        assert_eq!(*c.get(CredentialKey::Chain(&keys[3]), NOW).unwrap(), 33);
    }

    #[test]
    fn disabled_cache_keeps_nothing() {
        for (ttl, size) in [(0, 10), (300, 0)] {
            let c = CredentialCache::new(ttl, size);
            c.insert(CredentialKey::Chain(b"x"), NOW + 100, ());
            assert!(c.get(CredentialKey::Chain(b"x"), NOW).is_none());
            assert!(c.is_empty());
        }
    }

    #[test]
    fn generations_change_when_a_source_is_replaced() {
        let trust = Arc::new(String::from("trust store"));
        let gridmap = Arc::new(vec![1u8]);
        let then = Generation::new().with(&trust).with(&gridmap);
        assert!(then.is_current(&Generation::new().with(&trust).with(&gridmap)));
        // a reloaded source is a new value, even with the same content
        let reloaded = Arc::new(vec![1u8]);
        assert!(!then.is_current(&Generation::new().with(&trust).with(&reloaded)));
        // other sources, or fewer
        assert!(!then.is_current(&Generation::new().with(&gridmap).with(&trust)));
        assert!(!then.is_current(&Generation::new().with(&trust)));
        // the old value dropped and a new one allocated: never mistaken for it (the weak
        // reference keeps the old address taken)
        drop(gridmap);
        let again = Arc::new(vec![1u8]);
        assert!(!then.is_current(&Generation::new().with(&trust).with(&again)));
    }

    #[test]
    fn remembered_proof_and_decision_follow_their_generations() {
        use crate::dev::pki::{self, CertSpec, KeyKind};
        use crate::identity::gridmap::GridMapfile;
        use crate::identity::mapping::Mapper;
        use crate::trust::store::TrustStore;
        use crate::trust::x509::{PresentedChain, VerifyOptions, verify_chain};
        let now = crate::clock::now();
        let t = crate::clock::unix_seconds(now);
        let spec = |dn: &str, ca: bool| CertSpec {
            key: KeyKind::EcP256,
            ..if ca {
                CertSpec::ca(dn, now, 10).unwrap()
            } else {
                CertSpec::user(dn, now, 1).unwrap()
            }
        };
        let ca = pki::self_signed_ca(&spec("/O=Grid/CN=CA", true)).unwrap();
        let (ca_again, ca_cert) = (ca.cert.clone(), ca.cert.clone());
        let user = pki::issue(&ca, &spec("/O=Grid/CN=alice", false)).unwrap();
        let user_cert = user.cert.clone();
        let trust =
            Arc::new(TrustStore::from_certificates(vec![ca.cert.clone()], vec![], vec![]).unwrap());
        let ca_signer = ca;
        let chain = PresentedChain::from_certs(vec![user.cert]).unwrap();
        let proof = verify_chain(&trust, &chain, &VerifyOptions::default(), now).unwrap();
        let gridmap = Arc::new(GridMapfile::parse("\"/O=Grid/CN=alice\" alice\n").unwrap());
        let decision = Mapper::new(&gridmap).decide(&proof, Some("alice")).unwrap();
        assert!(decision.not_reusable().is_none());

        let reuse = reuse_until(t, proof.not_after(), proof.crl_next_update(), 300).unwrap();
        assert_eq!(reuse.bound, ReuseBound::Ttl);
        let verified = Generation::new().with(&trust);
        let mapped = Generation::new().with(&gridmap);
        let from: IpAddr = "10.0.0.5".parse().unwrap();
        let r = Remembered::new(proof.clone(), verified.clone(), reuse).with_decision(
            "alice",
            from,
            mapped.clone(),
            &decision,
        );
        assert_eq!(r.proof(&verified, t), Some(&proof));
        assert_eq!(r.decision("alice", from, &mapped), Some(&decision));
        // past its reuse, or another trust store: verify again
        assert!(r.proof(&verified, t + 300).is_none());
        let reloaded =
            Arc::new(TrustStore::from_certificates(vec![ca_again], vec![], vec![]).unwrap());
        assert!(r.proof(&Generation::new().with(&reloaded), t).is_none());
        assert_eq!(
            *r.proof_unchecked(),
            proof,
            "the bytes' own facts stay usable"
        );
        // another login name, address or grid-mapfile: decide again
        assert!(r.decision("bob", from, &mapped).is_none());
        assert!(
            r.decision("alice", "10.0.0.6".parse().unwrap(), &mapped)
                .is_none()
        );
        let edited = Arc::new(GridMapfile::parse("\"/O=Grid/CN=alice\" alice\n").unwrap());
        assert!(
            r.decision("alice", from, &Generation::new().with(&edited))
                .is_none()
        );
        // a CRL read by the verification bounds the reuse at its next update
        let next = now + std::time::Duration::from_secs(100);
        let crl = pki::crl(&ca_signer, &[], now, next, 1).unwrap();
        let with_crl = TrustStore::from_certificates(vec![ca_cert], vec![crl], vec![]).unwrap();
        let chain = PresentedChain::from_certs(vec![user_cert]).unwrap();
        let proof = verify_chain(&with_crl, &chain, &VerifyOptions::default(), now).unwrap();
        assert_eq!(proof.crl_next_update(), Some(t + 100));
        let reuse = reuse_until(t, proof.not_after(), proof.crl_next_update(), 300).unwrap();
        assert_eq!((reuse.until, reuse.bound), (t + 100, ReuseBound::CrlUpdate));
    }
}
