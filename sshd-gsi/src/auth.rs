//! Authentication through hpccert-core: the server asks, the core decides.
//!
//! [`Engine`] holds what the decisions read (trust store, grid-mapfile, token map, issuer
//! keys), each reloaded when its file changes (a broken new version is refused and the last
//! good one kept). Every attempt ends in one log line, as sshd writes them:
//! `Accepted token for alice from 10.0.0.5 port 40022 ssh2: ...` or
//! `Failed x509 for alice from 10.0.0.5 port 40022 ssh2: certificate expired ...`.
//!
//! A credential that verified a moment ago is not verified again: the engine keeps a
//! [`CredentialCache`] of verified chains and tokens, each with the generation of what its
//! verification read (trust store with CRLs and namespaces, issuer keys) and its last
//! reusable decision with the generation of what the mapping read (grid-mapfile, token map,
//! suspension list, restrictions), for the login name and client address it was made for.
//! A changed source is a new generation, so the next login verifies or maps afresh; a reload
//! (SIGHUP) makes a new engine with an empty cache. The possession proof (the SSH signature)
//! is always checked; the log line and the audit event say `cached` when a decision or a
//! verification came from the cache. Pool leases and token-claim accounts are decided again
//! at each login, from the remembered proof.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hpccert_core::config::{Config, SshMethod};
use hpccert_core::host::credential_cache::{
    CredentialCache, CredentialKey, FromCache, Generation, Remembered, reuse_until,
};
use hpccert_core::host::reload::Reloading;
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::gridmapdir::Gridmapdir;
use hpccert_core::identity::mapping::{Decision, Mapper, TokenRules};
use hpccert_core::identity::restriction::{RestrictionError, Restrictions, Source};
use hpccert_core::identity::suspension::{SuspensionError, SuspensionList};
use hpccert_core::identity::tokenmap::TokenMapfile;
use hpccert_core::token::fetch::{Fetcher, RefreshTiming, RefreshingKeySource};
use hpccert_core::token::{
    IssuerKeys, IssuerPolicy, KeySource, TokenError, VerifiedToken, unix_seconds, verify_token,
};
use hpccert_core::trust::sshca::krl::{self, Krl, KrlError};
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{PresentedChain, VerifiedChain, VerifyOptions, verify_chain};
use openssl::pkey::{PKey, Public};

use crate::x509auth;

/// The SSH authentication methods the configured ones are offered as.
pub fn method_set(config: &Config) -> russh::MethodSet {
    let mut methods = russh::MethodSet::empty();
    for m in &config.sshd.methods {
        methods.push(match m {
            SshMethod::X509 => russh::MethodKind::PublicKey,
            SshMethod::KeyboardInteractive => russh::MethodKind::KeyboardInteractive,
            SshMethod::Password => russh::MethodKind::Password,
            SshMethod::OpensshCert => russh::MethodKind::PublicKey,
        });
    }
    methods
}

/// How often changed files are noticed (in unit tests: at every look, so that a test can edit
/// a file and log in again at once).
const RELOAD_CHECK: Duration = if cfg!(test) {
    Duration::ZERO
} else {
    Duration::from_secs(2)
};

/// What an accepted login carries into the session.
#[derive(Debug, Clone)]
pub struct Login {
    pub method: &'static str,
    pub decision: Decision,
    /// For x509 logins with PAM: the presented chain (PEM), handed to the PAM stacks.
    pub chain_pem: Option<String>,
    /// For token logins: the token, handed to the sessions (`[sshd] session_token`).
    pub token: Option<zeroize::Zeroizing<String>>,
    /// What came from the credential cache (None: verified and decided now).
    pub cached: Option<FromCache>,
    /// For x509 logins with `[sshd] x509_proxy_handover`: the presented chain, which a proxy
    /// the client hands over must be or extend.
    pub x509_chain: Option<PresentedChain>,
}

/// A decision and what of it came from the credential cache.
pub type Decided = (Decision, Option<FromCache>);

/// What the credential cache proves about a credential.
#[derive(Debug, Clone)]
enum Proof {
    /// A verified chain, the algorithm it was presented under and the presented certificate's
    /// key, checked against that algorithm (for the possession proof).
    Chain {
        chain: VerifiedChain,
        algorithm: String,
        key: PKey<Public>,
        /// The chain as presented (for PAM and a proxy handover, without decoding it again).
        presented: PresentedChain,
    },
    Token(VerifiedToken),
}

/// An RFC 6187 key as a request presented it: the presented certificate's key for the
/// possession proof, from the cache or decoded now.
#[derive(Debug)]
pub struct PresentedX509 {
    algorithm: String,
    /// The presented certificate's key, checked against the algorithm.
    pub key: PKey<Public>,
    remembered: Option<Arc<Remembered<Proof>>>,
    /// The chain as presented (decoded now, or remembered with the key).
    pub chain: PresentedChain,
}

/// What a decision's mapping reads, as it is now, and its generation.
struct MappingSources {
    gridmap: Arc<GridMapfile>,
    token_map: Option<Arc<TokenMapfile>>,
    suspensions: Arc<Result<SuspensionList, SuspensionError>>,
    restrictions: Arc<Result<Restrictions, RestrictionError>>,
    generation: Generation,
}

/// A key source that remembers which keys a verification used (their generation).
struct RecordingKeys<'a> {
    inner: &'a dyn KeySource,
    used: std::sync::Mutex<Option<IssuerKeys>>,
}

impl RecordingKeys<'_> {
    fn record(&self, keys: &IssuerKeys) {
        *self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys.clone());
    }
}

impl KeySource for RecordingKeys<'_> {
    fn keys(&self, policy: &IssuerPolicy, now: i64) -> Result<IssuerKeys, TokenError> {
        let keys = self.inner.keys(policy, now)?;
        self.record(&keys);
        Ok(keys)
    }
    fn refresh_for_unknown_kid(&self, policy: &IssuerPolicy, now: i64) -> Option<IssuerKeys> {
        let keys = self.inner.refresh_for_unknown_kid(policy, now)?;
        self.record(&keys);
        Some(keys)
    }
}

/// Sessions open per identity (restrictions' `max-sessions`), across connections.
#[derive(Debug, Default)]
pub struct SessionCounter(Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>);

/// One session's place in the count, given back when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    counter: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    identity: String,
}

impl SessionCounter {
    /// A place for one more session of `identity`, unless `max` are open.
    pub fn acquire(&self, identity: &str, max: u32) -> Result<SessionSlot, String> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(identity.to_string()).or_insert(0);
        if *n >= max {
            return Err(format!(
                "{identity} has {n} session(s) open: its restrictions allow max-sessions={max}"
            ));
        }
        *n += 1;
        Ok(SessionSlot {
            counter: Arc::clone(&self.0),
            identity: identity.to_string(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

/// What a decision reads besides the credential: grid-mapfile, suspension list, restrictions.
type Sources<'a> = (
    &'a GridMapfile,
    &'a Result<SuspensionList, SuspensionError>,
    &'a Result<Restrictions, RestrictionError>,
);

/// The decision sources of a running server.
pub struct Engine {
    pub config: Config,
    trust: Option<Reloading<TrustStore>>,
    /// None: tokens only and no grid-mapfile on this host (an empty map).
    gridmap: Option<Reloading<GridMapfile>>,
    token_map: Option<Reloading<TokenMapfile>>,
    keys: RefreshingKeySource,
    policies: Vec<IssuerPolicy>,
    rules: Vec<TokenRules>,
    verify_options: VerifyOptions,
    ssh_cas: Vec<russh::keys::PublicKey>,
    /// `[sshd] revoked_keys` as it is now; an unusable KRL (`Err`) refuses every OpenSSH
    /// certificate, so it is not kept as "last good" either.
    revoked_keys: Option<Reloading<Result<Krl, KrlError>>>,
    /// The suspension list as it is now; an unusable one (`Err`) refuses every login.
    suspensions: Reloading<Result<SuspensionList, SuspensionError>>,
    restrictions: Reloading<Result<Restrictions, RestrictionError>>,
    /// Sessions open per identity, for `max-sessions` restrictions.
    pub sessions: SessionCounter,
    /// The pools logins lease from (None: no `[[pool]]`).
    pools: Option<Gridmapdir>,
    /// The PAM broker (None: `use_pam = false`).
    pub pam: Option<crate::pam::Broker>,
    pub audit: crate::audit::Audit,
    /// Verified chains and tokens, with their last reusable decisions.
    cache: CredentialCache<Remembered<Proof>>,
    /// Full verifications done (chains and tokens), for tests and the debug log.
    verifications: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("issuers", &self.policies.len())
            .finish_non_exhaustive()
    }
}

fn load_token_map(path: &Path) -> Result<TokenMapfile, String> {
    TokenMapfile::load(path).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

impl Engine {
    /// Load every source; a source the configured methods need and that cannot be read is an
    /// error (the server does not start half-blind).
    pub fn load(config: Config) -> Result<Self, String> {
        let wants_x509 = config.sshd.methods.contains(&SshMethod::X509);
        let trust_source = config.trust.source();
        let trust = if wants_x509 {
            Some(
                Reloading::open(&trust_source, RELOAD_CHECK, TrustStore::load)
                    .map_err(|e| format!("trust store {}: {e}", trust_source.display()))?,
            )
        } else {
            None
        };
        let gm = &config.mapping.grid_mapfile;
        let gridmap = if gm.exists() || wants_x509 {
            Some(
                Reloading::open(gm, RELOAD_CHECK, GridMapfile::load)
                    .map_err(|e| format!("grid-mapfile: {e}"))?,
            )
        } else {
            None
        };
        let token_map = match &config.mapping.token_mapfile {
            Some(p) => Some(
                Reloading::open(p, RELOAD_CHECK, load_token_map)
                    .map_err(|e| format!("token map: {e}"))?,
            ),
            None => None,
        };
        let files = config.file_key_source();
        let fetcher = Fetcher::new(Duration::from_secs(config.tokens.fetch_timeout))?;
        let timing = RefreshTiming {
            refresh_after: config.tokens.refresh_after,
            negative_ttl: config.tokens.negative_ttl,
            min_refetch_interval: config.tokens.min_refetch_interval,
        };
        let keys =
            config
                .issuers
                .iter()
                .fold(
                    RefreshingKeySource::new(files, fetcher, timing),
                    |k, i| match &i.jwks_uri {
                        Some(u) => k.with_jwks_uri(&i.issuer, u),
                        None => k,
                    },
                );
        let policies = config.issuer_policies();
        let rules = TokenRules::of_config(&config);
        let verify_options = config.trust.verify_options();
        let audit = crate::audit::Audit::open(config.sshd.audit_log.as_deref())?;
        // a broken list refuses every login (fail closed), so it is not kept as "last good"
        let suspensions = Reloading::open(&config.mapping.suspended_file, RELOAD_CHECK, |p| {
            Ok::<_, String>(SuspensionList::load(p))
        })
        .map_err(|e| format!("suspension list: {e}"))?;
        if let Err(e) = suspensions.current().as_ref() {
            return Err(format!("suspension list: {e}"));
        }
        let restrictions = Reloading::open(&config.mapping.restrictions_file, RELOAD_CHECK, |p| {
            Ok::<_, String>(Restrictions::load(p))
        })
        .map_err(|e| format!("restrictions: {e}"))?;
        if let Err(e) = restrictions.current().as_ref() {
            return Err(format!("restrictions: {e}"));
        }
        let pools = Gridmapdir::from_config(&config)?;
        let pam = if config.sshd.use_pam {
            let helper = crate::pam::helper_path(config.sshd.pam_helper.as_deref())?;
            Some(crate::pam::Broker::start(helper, &config.sshd.pam_service)?)
        } else {
            None
        };
        let mut ssh_cas = Vec::new();
        let mut revoked_keys = None;
        if config.sshd.methods.contains(&SshMethod::OpensshCert) {
            for f in &config.sshd.trusted_user_ca_keys {
                ssh_cas.extend(hpccert_core::trust::sshcert::load_ca_keys(f)?);
            }
            if let Some(path) = &config.sshd.revoked_keys {
                revoked_keys = Some(open_revoked_keys(path)?);
            }
        }
        let cache = CredentialCache::new(
            config.sshd.credential_cache_ttl,
            config.sshd.credential_cache_size,
        );
        Ok(Self {
            config,
            trust,
            gridmap,
            token_map,
            keys,
            policies,
            rules,
            verify_options,
            ssh_cas,
            revoked_keys,
            suspensions,
            restrictions,
            sessions: SessionCounter::default(),
            pools,
            pam,
            audit,
            cache,
            verifications: AtomicU64::new(0),
        })
    }

    /// Full verifications of chains and tokens so far (cache hits do not count).
    #[cfg(test)]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn count_verification(&self, what: &str) {
        let n = self.verifications.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(target: "sshd_gsi::auth", "{what} verified in full (verification {n} of this engine)");
    }

    /// What the mapping of a decision reads now, with its generation.
    fn mapping_sources(&self) -> MappingSources {
        let gridmap = self.gridmap();
        let token_map = self.token_map.as_ref().map(|m| m.current());
        let suspensions = self.suspensions.current();
        let restrictions = self.restrictions.current();
        let mut generation = Generation::new()
            .with(&gridmap)
            .with(&suspensions)
            .with(&restrictions);
        if let Some(t) = &token_map {
            generation = generation.with(t);
        }
        MappingSources {
            gridmap,
            token_map,
            suspensions,
            restrictions,
            generation,
        }
    }

    /// The current grid-mapfile (empty when there is none).
    fn gridmap(&self) -> Arc<GridMapfile> {
        self.gridmap
            .as_ref()
            .map(Reloading::current)
            .unwrap_or_default()
    }

    /// A mapper over `gridmap` with the suspension list, leasing pool accounts when `lease`
    /// (a login) or only looking at leases (a key query, which must change nothing).
    fn mapper<'a>(
        &'a self,
        (gridmap, suspensions, restrictions): Sources<'a>,
        lease: bool,
        from: IpAddr,
    ) -> Mapper<'a> {
        let m = Mapper::new(gridmap)
            .with_suspensions(suspensions)
            .with_restrictions(restrictions, Source::Known(from));
        match (&self.pools, lease) {
            (Some(p), true) => m.with_pools(p),
            (Some(p), false) => m.with_pool_preview(p),
            (None, _) => m,
        }
    }

    /// Verify a bearer token and map it to `user`. Blocking (may fetch issuer keys). A token
    /// that verified a moment ago, whose issuer's keys are the same, is not verified again.
    pub fn token_login(
        &self,
        user: &str,
        token: &str,
        from: IpAddr,
        now: SystemTime,
    ) -> Result<Decided, String> {
        if self.policies.is_empty() {
            return Err("no token issuer is configured".into());
        }
        let t = unix_seconds(now);
        let key = CredentialKey::token(token);
        let MappingSources {
            gridmap,
            token_map,
            suspensions,
            restrictions,
            generation: mapped_now,
        } = self.mapping_sources();
        let decide = |verified: &VerifiedToken| {
            self.mapper((&gridmap, &suspensions, &restrictions), true, from)
                .with_tokens(token_map.as_deref(), &self.rules)
                .decide_token(verified, Some(user))
                .map_err(|e| {
                    // name the identity once: some refusals already do
                    let e = e.to_string();
                    if e.contains(verified.subject()) {
                        e
                    } else {
                        format!("{} (issuer {}): {e}", verified.subject(), verified.issuer())
                    }
                })
        };
        if let Some(remembered) = self.cache.get(key, t)
            && let Proof::Token(verified) = remembered.proof_unchecked()
            && let Some(keys_now) = self.current_issuer_keys(verified.issuer(), t)
            && let Some(Proof::Token(verified)) = remembered.proof(&keys_now, t)
        {
            return self.reuse(key, &remembered, verified, (user, from, mapped_now), decide);
        }
        self.count_verification("token");
        let recording = RecordingKeys {
            inner: &self.keys,
            used: std::sync::Mutex::new(None),
        };
        let verified = match verify_token(
            token,
            &self.policies,
            &recording,
            self.config.tokens.max_token_bytes,
            now,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.cache.remove(key);
                return Err(e.to_string());
            }
        };
        let decision = decide(&verified)?;
        let used = recording
            .used
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(keys) = used
            && let Some(reuse) = reuse_until(t, verified.expires_at(), None, self.cache.ttl())
        {
            let remembered = Remembered::new(
                Proof::Token(verified),
                Generation::new().with(&keys.keys),
                reuse,
            )
            .with_decision(user, from, mapped_now, &decision);
            self.cache.insert(key, reuse.until, remembered);
        }
        Ok((decision, None))
    }

    /// The generation of `issuer`'s keys now, if they could verify a token now (not older
    /// than the issuer's `max_key_age`, as the verification requires).
    fn current_issuer_keys(&self, issuer: &str, now: i64) -> Option<Generation> {
        let policy = self.policies.iter().find(|p| p.issuer == issuer)?;
        let keys = self.keys.keys(policy, now).ok()?;
        if keys
            .fetched_at
            .is_some_and(|fetched| now - fetched > policy.max_key_age)
        {
            return None;
        }
        Some(Generation::new().with(&keys.keys))
    }

    /// A login with a remembered proof: its remembered decision when made for this login name
    /// and address under the current mapping files, else a decision made now (remembered
    /// in turn when it may be reused).
    fn reuse<P>(
        &self,
        key: CredentialKey<'_>,
        remembered: &Arc<Remembered<Proof>>,
        proof: &P,
        (user, from, mapped_now): (&str, IpAddr, Generation),
        decide: impl FnOnce(&P) -> Result<Decision, String>,
    ) -> Result<Decided, String> {
        if let Some(d) = remembered.decision(user, from, &mapped_now) {
            return Ok((d.clone(), Some(FromCache::Decision)));
        }
        let decision = decide(proof)?;
        if decision.not_reusable().is_none() {
            let updated =
                Remembered::clone(remembered).with_decision(user, from, mapped_now, &decision);
            self.cache.insert(key, remembered.reuse().until, updated);
        }
        Ok((decision, Some(FromCache::Verification)))
    }

    /// Verify an OpenSSH user certificate (russh checked the possession proof) for `user`.
    pub fn ssh_cert_login(
        &self,
        user: &str,
        cert: &russh::keys::Certificate,
        peer: &SocketAddr,
        now: SystemTime,
    ) -> Result<Decision, String> {
        // revocation first, as sshd checks RevokedKeys before anything else
        self.check_revoked(cert)?;
        let verified = hpccert_core::trust::sshcert::verify_ssh_certificate(
            cert,
            &self.ssh_cas,
            Some(peer.ip()),
            now,
        )
        .map_err(|e| e.to_string())?;
        let gridmap = self.gridmap();
        let suspensions = self.suspensions.current();
        let restrictions = self.restrictions.current();
        self.mapper((&gridmap, &suspensions, &restrictions), true, peer.ip())
            .decide_ssh_certificate(&verified, Some(user))
            .map_err(|e| e.to_string())
    }

    /// Refuse `cert` when `[sshd] revoked_keys` revokes it, or when that file is unusable.
    fn check_revoked(&self, cert: &russh::keys::Certificate) -> Result<(), String> {
        let Some(revoked_keys) = &self.revoked_keys else {
            return Ok(());
        };
        match revoked_keys.current().as_ref() {
            Err(e) => Err(format!(
                "certificate {:?} serial {} refused: the revoked keys file is unusable, so every OpenSSH certificate is refused until it is fixed: {e}",
                cert.key_id(),
                cert.serial()
            )),
            Ok(krl) => match krl.is_revoked(cert) {
                Some(reason) => Err(format!(
                    "certificate {:?} serial {} revoked by {}: {reason}",
                    cert.key_id(),
                    cert.serial(),
                    revoked_keys.path().display()
                )),
                None => Ok(()),
            },
        }
    }

    /// The presented certificate's key of an RFC 6187 key blob, for the possession proof:
    /// from the cache when the same blob verified a moment ago (nothing is decoded), else
    /// decoded and checked against `algorithm` now.
    pub fn x509_key(
        &self,
        algorithm: &str,
        blob: &[u8],
        now: SystemTime,
    ) -> Result<PresentedX509, String> {
        if let Some(remembered) = self
            .cache
            .get(CredentialKey::Chain(blob), unix_seconds(now))
            && let Proof::Chain {
                algorithm: a,
                key,
                presented,
                ..
            } = remembered.proof_unchecked()
            && a == algorithm
        {
            return Ok(PresentedX509 {
                algorithm: algorithm.to_string(),
                key: key.clone(),
                chain: presented.clone(),
                remembered: Some(remembered),
            });
        }
        let parsed = x509auth::parse_key_blob(algorithm, blob)?;
        let key = x509auth::check_key(algorithm, &parsed.leaf)?;
        Ok(PresentedX509 {
            algorithm: algorithm.to_string(),
            key,
            chain: parsed.chain,
            remembered: None,
        })
    }

    /// Verify a certificate chain (the key blob `blob`, as [`Engine::x509_key`] presented it)
    /// and map it to `user`; a pool account is leased only when `lease` (the signed request,
    /// not the key query). A chain that verified a moment ago under the same trust store is
    /// not verified again.
    pub fn x509_login(
        &self,
        user: &str,
        (blob, presented): (&[u8], PresentedX509),
        (from, now): (IpAddr, SystemTime),
        lease: bool,
    ) -> Result<Decided, String> {
        let t = unix_seconds(now);
        let key = CredentialKey::Chain(blob);
        let trust = self.trust.as_ref().ok_or("x509 is not enabled")?.current();
        let verified_now = Generation::new().with(&trust);
        let MappingSources {
            gridmap,
            suspensions,
            restrictions,
            generation: mapped_now,
            ..
        } = self.mapping_sources();
        let decide = |chain: &VerifiedChain| {
            self.mapper((&gridmap, &suspensions, &restrictions), lease, from)
                .decide(chain, Some(user))
                .map_err(|e| e.to_string())
        };
        if let Some(remembered) = &presented.remembered
            && let Some(Proof::Chain { chain, .. }) = remembered.proof(&verified_now, t)
        {
            return self.reuse(key, remembered, chain, (user, from, mapped_now), decide);
        }
        self.count_verification("x509 chain");
        let verified = match verify_chain(&trust, &presented.chain, &self.verify_options, now) {
            Ok(v) => v,
            Err(e) => {
                self.cache.remove(key);
                return Err(e.to_string());
            }
        };
        let decision = decide(&verified)?;
        if let Some(reuse) = reuse_until(
            t,
            verified.not_after(),
            verified.crl_next_update(),
            self.cache.ttl(),
        ) {
            let proof = Proof::Chain {
                chain: verified,
                algorithm: presented.algorithm,
                key: presented.key,
                presented: presented.chain,
            };
            let remembered = Remembered::new(proof, verified_now, reuse)
                .with_decision(user, from, mapped_now, &decision);
            self.cache.insert(key, reuse.until, remembered);
        }
        Ok((decision, None))
    }
}

impl Engine {
    /// Whether the proxy file a client hands over (`X509_USER_PROXY_PEM`, `[sshd]
    /// x509_proxy_handover`) may go to the sessions of `login`: the file (PEM) as it will be
    /// written, and the one line saying which proxy it is; else why not. Never the PEM in either.
    pub fn proxy_handover(
        &self,
        login: &Login,
        pem: &[u8],
        now: SystemTime,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, String), String> {
        use hpccert_core::trust::proxyfile::{LoginCredential, ProxyFile, verify_handover};
        let (Some(chain), hpccert_core::identity::Identity::Certificate(identity)) =
            (&login.x509_chain, login.decision.identity())
        else {
            return Err(format!("the login was not X.509 ({})", login.method));
        };
        let trust = self.trust.as_ref().ok_or("x509 is not enabled")?.current();
        let handed = ProxyFile::from_pem(pem).map_err(|e| format!("not a proxy file: {e}"))?;
        let credential = LoginCredential {
            chain,
            identity,
            proxy_depth: login.decision.proxy_depth(),
        };
        let verified = verify_handover(&trust, &self.verify_options, now, &credential, &handed)
            .map_err(|e| e.to_string())?;
        let file = handed.to_pem()?;
        let until = hpccert_core::trust::x509::format_unix(verified.not_after());
        Ok((
            file,
            format!(
                "{} (proxy depth {}, {}, valid until {until})",
                verified.presented_subject().to_slash(),
                verified.proxy_depth(),
                verified.fingerprint()
            ),
        ))
    }
}

/// Open `[sshd] revoked_keys`, reloaded when it changes. A missing or broken file does not stop
/// the server (token and X.509 logins go on): it is logged now, and every OpenSSH certificate
/// is refused, each refusal saying why, until a good file is in place.
fn open_revoked_keys(path: &Path) -> Result<Reloading<Result<Krl, KrlError>>, String> {
    let reloading = Reloading::open(path, RELOAD_CHECK, |p| {
        let krl = krl::load(p);
        match &krl {
            Ok(k) => {
                tracing::info!(target: "sshd_gsi", "revoked keys {}: {}", p.display(), k.summary())
            }
            // the error names the file
            Err(e) => tracing::error!(
                target: "sshd_gsi",
                "revoked keys unusable, every openssh-cert login is refused until it is fixed: {e}"
            ),
        }
        Ok::<_, String>(krl)
    })
    .map_err(|e| format!("[sshd] revoked_keys {}: {e}", path.display()))?;
    Ok(reloading)
}

impl Engine {
    /// Log a refusal (sshd's wording, so fail2ban and log tools work) and audit it.
    pub fn log_failure(&self, method: &str, user: &str, peer: &SocketAddr, reason: &str) {
        log_failure(method, user, peer, reason);
        self.audit.refused(method, user, peer, reason);
        crate::metrics::get().auth(method, "refuse");
    }

    /// Log an accepted login and audit it.
    pub fn log_success(
        &self,
        method: &str,
        user: &str,
        peer: &SocketAddr,
        (d, cached): (&Decision, Option<FromCache>),
    ) {
        log_success(method, user, peer, d, cached);
        self.audit.accepted(method, user, peer, d, cached);
        crate::metrics::get().auth(method, "accept");
    }
}

/// `from 10.0.0.5 port 40022 ssh2`, as sshd writes it.
pub fn from(peer: &SocketAddr) -> String {
    format!("from {} port {} ssh2", peer.ip(), peer.port())
}

/// Log a refusal (sshd's wording, so fail2ban and log tools work) and return it.
pub fn log_failure(method: &str, user: &str, peer: &SocketAddr, reason: &str) {
    tracing::info!(target: "sshd_gsi::auth", "Failed {method} for {user} {}: {reason}", from(peer));
}

/// Log an accepted login with identity, credential fingerprint, proxy depth and account, and
/// `cached decision` or `cached verification` when that came from the credential cache.
pub fn log_success(
    method: &str,
    user: &str,
    peer: &SocketAddr,
    d: &Decision,
    cached: Option<FromCache>,
) {
    let cached = match cached {
        Some(c) => format!(" (cached {c})"),
        None => String::new(),
    };
    tracing::info!(
        target: "sshd_gsi::auth",
        "Accepted {method} for {user} {}: identity \"{}\" credential {} proxy depth {} account {}{cached}",
        from(peer),
        d.identity(),
        d.credential(),
        d.proxy_depth(),
        d.account()
    );
}

/// The keyboard-interactive prompts of the continuation scheme
/// ([`hpccert_core::token::entry`]): stock OpenSSH reads each answer into a 1024-byte
/// buffer, so a 2-4 KB token comes in parts; `hpccert-askpass` answers part N.
pub const FIRST_PROMPT: &str = "Access token: ";

pub fn part_prompt(n: usize) -> String {
    format!("Access token (part {n}): ")
}

/// A shared engine.
pub type SharedEngine = Arc<Engine>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_prompts() {
        assert_eq!(part_prompt(2), "Access token (part 2): ");
        assert!(FIRST_PROMPT.ends_with(": "));
    }
}
