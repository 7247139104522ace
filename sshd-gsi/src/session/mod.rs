//! One SSH connection: the russh handler. Authentication callbacks ask [`crate::auth`];
//! channel requests start processes through [`crate::spawn`] and pump their I/O.
//!
//! Supported per session channel: `pty-req`, `env` (allow-list), `window-change`, `signal`,
//! then one of `exec`, `shell` or `subsystem sftp`. Output flows with the channel window (a
//! slow client slows the child; buffers stay bounded); exit status or signal, EOF and close
//! are sent when the process ends.

mod channel;
mod pump;
mod start;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hpccert_core::config::SshMethod;
use russh::server::{Auth, Msg, Response, Session};
use russh::{Channel, ChannelId, Pty as PtyMode, Sig};

use self::channel::HandedProxy;
use self::channel::{ChannelState, PtyRequest};
use self::start::{Origin, Start, chain_pem};
use crate::auth::{self, Login, SharedEngine};
use crate::limits::AuthFlag;
use crate::sessionfile::{Kind, SessionFile, SessionFiles};
use crate::spawn::{self, Account};
use crate::x509auth;
use hpccert_core::host::credential_cache::FromCache;
use hpccert_core::token::entry::{Next, TokenEntry};

/// What a login hands on to the PAM stacks and the sessions.
enum Handover {
    None,
    /// The presented chain: as PEM, for pam_hpccert's `x509` option; as certificates, for
    /// `[sshd] x509_proxy_handover`.
    Chain {
        pem: Option<String>,
        chain: Option<hpccert_core::trust::x509::PresentedChain>,
    },
    /// The bearer token, for `[sshd] session_token`.
    Token(zeroize::Zeroizing<String>),
}

/// The handler of one connection.
pub struct Connection {
    engine: SharedEngine,
    peer: SocketAddr,
    local: SocketAddr,
    entry: TokenEntry,
    login: Option<(Login, Account)>,
    /// The login name the client authenticated as.
    user: String,
    channels: HashMap<ChannelId, ChannelState>,
    /// Set on a successful login (the accept loop's grace timer reads it).
    authenticated: Arc<AuthFlag>,
    /// The login's token file while a session holds it.
    session_token: std::sync::Weak<SessionFile>,
    /// With PAM: the child that ran the login's account stack, kept for its first session.
    pam_job: Option<crate::pam::AccountJob>,
    /// The key blob of the last acceptable X.509 key query and what of its decision came
    /// from the credential cache: the signed request that follows reuses that decision, and
    /// the login reports the query's origin (a chain verified by this login's own query is
    /// not "cached").
    queried: Option<(Vec<u8>, Option<FromCache>)>,
    /// The last proxy file handed over on this login (its SHA-256) while a session holds it.
    session_proxy: Option<([u8; 32], std::sync::Weak<SessionFile>)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        engine: SharedEngine,
        peer: SocketAddr,
        local: SocketAddr,
        authenticated: Arc<AuthFlag>,
    ) -> Self {
        Self {
            engine,
            peer,
            local,
            entry: TokenEntry::default(),
            login: None,
            user: String::new(),
            channels: HashMap::new(),
            authenticated,
            session_token: std::sync::Weak::new(),
            pam_job: None,
            queried: None,
            session_proxy: None,
        }
    }

    /// A refusal that offers every configured method again, as sshd does (russh would drop
    /// `password` from the list after a wrong one, and clients that follow the list then
    /// give up instead of asking again).
    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(auth::method_set(&self.engine.config)),
            partial_success: false,
        }
    }

    fn offers(&self, m: SshMethod) -> bool {
        self.engine.config.sshd.methods.contains(&m)
    }

    /// Verify a token for `user` off the async threads (the key source may fetch).
    async fn token_login(&mut self, method: &'static str, user: &str, token: String) -> Auth {
        let engine = self.engine.clone();
        let u = user.to_string();
        let now = hpccert_core::clock::now();
        let kept = zeroize::Zeroizing::new(token.clone());
        let from = self.peer.ip();
        let result = tokio::task::spawn_blocking(move || engine.token_login(&u, &token, from, now))
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        self.finish_login(method, user, result, Handover::Token(kept))
            .await
    }

    async fn finish_login(
        &mut self,
        method: &'static str,
        user: &str,
        result: Result<auth::Decided, String>,
        handover: Handover,
    ) -> Auth {
        let (chain_pem, x509_chain, token) = match handover {
            Handover::None => (None, None, None),
            Handover::Chain { pem, chain } => (pem, chain, None),
            Handover::Token(t) => (None, None, Some(t)),
        };
        let result = result.and_then(|(decision, cached)| {
            let account = Account::lookup(decision.account().as_str())?;
            account.can_switch_to()?;
            Ok((
                Login {
                    method,
                    decision,
                    chain_pem,
                    token,
                    cached,
                    x509_chain,
                },
                account,
            ))
        });
        let result = match result {
            Ok((login, account)) if let Some(pam) = &self.engine.pam => {
                let request = start::pam_request(&self.origin(), &account, &login, None, None);
                match pam.account(&request).await {
                    Ok(job) => {
                        self.pam_job = Some(job);
                        Ok((login, account))
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match result {
            Ok((login, account)) => {
                self.engine
                    .log_success(method, user, &self.peer, (&login.decision, login.cached));
                self.login = Some((login, account));
                self.user = user.to_string();
                self.authenticated.mark();
                Auth::Accept
            }
            Err(reason) => {
                self.engine.log_failure(method, user, &self.peer, &reason);
                self.reject()
            }
        }
    }

    /// The connection's side of a session process.
    fn origin(&self) -> Origin<'_> {
        Origin {
            engine: &self.engine,
            user: &self.user,
            peer: self.peer,
            local: self.local,
        }
    }

    /// Start the channel's process (one per session channel).
    async fn start(
        &mut self,
        id: ChannelId,
        what: Start,
        session: &mut Session,
    ) -> Result<(), String> {
        let pam_job = self.pam_job.take();
        let Some((login, account)) = &self.login else {
            return Err("not authenticated".into());
        };
        let Some(state) = self.channels.get_mut(&id) else {
            return Err("unknown channel".into());
        };
        let dir = &self.engine.config.sshd.session_token_dir;
        // the token file: shared by the login's sessions, made for the first one
        let token_file = match &login.token {
            Some(token) if self.engine.config.sshd.session_token => {
                match self.session_token.upgrade() {
                    Some(t) => Some(t),
                    None => {
                        let t = Arc::new(SessionFile::create(
                            dir,
                            account,
                            Kind::Token,
                            token.as_bytes(),
                        )?);
                        self.session_token = Arc::downgrade(&t);
                        Some(t)
                    }
                }
            }
            _ => None,
        };
        // the proxy file, when this session's client handed one over: shared by the login's
        // sessions that hand over the same one, made for the first of them
        let proxy_file = match &state.proxy {
            Some(handed) => {
                let live = self
                    .session_proxy
                    .as_ref()
                    .filter(|(digest, _)| *digest == handed.digest)
                    .and_then(|(_, file)| file.upgrade());
                match live {
                    Some(p) => Some(p),
                    None => {
                        let p = Arc::new(SessionFile::create(
                            dir,
                            account,
                            Kind::Proxy,
                            &handed.file,
                        )?);
                        self.session_proxy = Some((handed.digest, Arc::downgrade(&p)));
                        Some(p)
                    }
                }
            }
            None => None,
        };
        // restrictions: a forced command runs instead of the client's (which the session finds
        // in SSH_ORIGINAL_COMMAND); the identity's sessions are counted across connections
        let restrictions = login.decision.restrictions();
        let (what, original) = match &restrictions.command {
            Some(forced) => {
                let original = match &what {
                    Start::Exec(c) => Some(c.clone()),
                    Start::Subsystem(p) => Some(p.display().to_string()),
                    Start::Shell => None,
                };
                (Start::Exec(forced.clone()), original)
            }
            None => (what, None),
        };
        let slot = match restrictions.max_sessions {
            Some(max) => Some(
                self.engine
                    .sessions
                    .acquire(&login.decision.identity().to_string(), max)?,
            ),
            None => None,
        };
        let origin = Origin {
            engine: &self.engine,
            user: &self.user,
            peer: self.peer,
            local: self.local,
        };
        start::start(
            &origin,
            (login, account),
            state,
            (id, what, original),
            (SessionFiles::new(token_file, proxy_file), slot, pam_job),
            session.handle(),
        )
        .await
    }

    fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(id)
        } else {
            session.channel_failure(id)
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // clients start with "none" to learn the methods: not a failure worth INFO (as sshd)
        tracing::debug!(target: "sshd_gsi::auth", "Failed none for {user} {}", auth::from(&self.peer));
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::Password) {
            return Ok(Auth::UnsupportedMethod);
        }
        Ok(self
            .token_login("token (password)", user, password.trim().to_string())
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // russh cannot tell an OpenSSH certificate's key from a plain key here: with
        // openssh-cert enabled the possession proof is asked for, and the certificate is
        // judged in auth_openssh_certificate; plain keys are refused in auth_publickey
        Ok(if self.offers(SshMethod::OpensshCert) {
            Auth::Accept
        } else {
            self.reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // clients offer every key they hold: logged at debug, as sshd logs them at VERBOSE
        let fp = key.public_key.fingerprint(russh::keys::HashAlg::Sha256);
        tracing::debug!(
            target: "sshd_gsi::auth",
            "Failed publickey for {user} {}: plain SSH keys are not accepted ({fp})",
            auth::from(&self.peer)
        );
        Ok(self.reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::OpensshCert) {
            self.engine
                .log_failure("openssh-cert", user, &self.peer, "method not enabled");
            return Ok(self.reject());
        }
        let result = self
            .engine
            .ssh_cert_login(user, certificate, &self.peer, hpccert_core::clock::now())
            .map(|d| (d, None));
        Ok(self
            .finish_login("openssh-cert", user, result, Handover::None)
            .await)
    }

    async fn auth_external_publickey(
        &mut self,
        user: &str,
        algorithm: &str,
        key_blob: &[u8],
        signature: Option<russh::server::ExternalSignature<'_>>,
    ) -> Result<Auth, Self::Error> {
        let refuse = |this: &Self, reason: String| {
            this.engine.log_failure("x509", user, &this.peer, &reason);
            Ok(self.reject())
        };
        if !self.offers(SshMethod::X509)
            || !self
                .engine
                .config
                .sshd
                .x509_algorithms
                .iter()
                .any(|a| a == algorithm)
        {
            return refuse(self, format!("algorithm {algorithm} is not enabled"));
        }
        // the presented certificate's key: from the credential cache when this exact chain
        // verified a moment ago, else decoded now
        let now = hpccert_core::clock::now();
        let presented = match self.engine.x509_key(algorithm, key_blob, now) {
            Ok(p) => p,
            Err(e) => return refuse(self, e),
        };
        // the possession proof, always
        if let Some(sig) = &signature
            && let Err(e) = x509auth::verify_signature_with(
                algorithm,
                &presented.key,
                sig.signed_data,
                sig.signature,
            )
        {
            return refuse(self, format!("possession proof: {e}"));
        }
        // the whole decision, for a query too: PK_OK promises that a signature will be accepted
        let chain_pem = (signature.is_some() && self.engine.pam.is_some())
            .then(|| chain_pem(&presented.chain))
            .flatten();
        let engine = self.engine.clone();
        let u = user.to_string();
        let blob = key_blob.to_vec();
        // kept for a proxy the client may hand over, which must be this chain or extend it
        let x509_chain = (signature.is_some() && self.engine.config.sshd.x509_proxy_handover)
            .then(|| presented.chain.clone());
        let lease = signature.is_some();
        let from = self.peer.ip();
        let result = tokio::task::spawn_blocking(move || {
            engine.x509_login(&u, (&blob, presented), (from, now), lease)
        })
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
        if signature.is_none() {
            return match result {
                Ok((d, cached)) => {
                    self.queried = Some((key_blob.to_vec(), cached));
                    tracing::debug!(target: "sshd_gsi::auth", "x509 query for {user} acceptable: {}{}", d.identity(), if cached.is_some() { " (cached)" } else { "" });
                    Ok(Auth::Accept)
                }
                Err(e) => refuse(self, e),
            };
        }
        let result = result.map(|(d, cached)| match &self.queried {
            Some((queried, by_query)) if cached.is_some() && queried == key_blob => (d, *by_query),
            _ => (d, cached),
        });
        Ok(self
            .finish_login(
                "x509",
                user,
                result,
                Handover::Chain {
                    pem: chain_pem,
                    chain: x509_chain,
                },
            )
            .await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if !self.offers(SshMethod::KeyboardInteractive) {
            return Ok(self.reject()); // russh drops the connection on UnsupportedMethod here
        }
        let prompt = |text: String| Auth::Partial {
            name: "".into(),
            instructions: "".into(),
            prompts: vec![(text.into(), false)].into(),
        };
        let Some(mut response) = response else {
            self.entry = TokenEntry::default();
            return Ok(prompt(auth::FIRST_PROMPT.to_string()));
        };
        let answer = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match self
            .entry
            .answer(&answer, self.engine.config.tokens.max_token_bytes)
        {
            Next::Ask(n) => Ok(prompt(auth::part_prompt(n))),
            Next::TooLong => {
                self.engine.log_failure(
                    "token (keyboard-interactive)",
                    user,
                    &self.peer,
                    "token too long",
                );
                Ok(self.reject())
            }
            Next::Done(token) => match token.as_str() {
                Some(t) => {
                    let t = t.to_string();
                    Ok(self
                        .token_login("token (keyboard-interactive)", user, t)
                        .await)
                }
                None => {
                    self.engine.log_failure(
                        "token (keyboard-interactive)",
                        user,
                        &self.peer,
                        "the answer is not UTF-8 text",
                    );
                    Ok(self.reject())
                }
            },
        }
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .engine
            .config
            .sshd
            .banner
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok()))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.login.is_none() {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        // channels whose process ended were closed by the server: russh calls no close
        // handler for them, so they leave the count here
        self.channels.retain(|_, s| !s.ended());
        let max = self.engine.config.sshd.max_sessions;
        if self.channels.len() >= max {
            tracing::warn!(target: "sshd_gsi::session", "session channel refused {}: {} open, [sshd] max_sessions = {max}", auth::from(&self.peer), self.channels.len());
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let id = channel.id();
        self.channels.insert(
            id,
            ChannelState {
                channel: Some(channel),
                ..ChannelState::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(PtyMode, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let no_pty = self
            .login
            .as_ref()
            .is_some_and(|(l, _)| l.decision.restrictions().no_pty);
        if no_pty {
            tracing::warn!(target: "sshd_gsi::session", "pty refused {}: the identity's restrictions say no-pty", auth::from(&self.peer));
        }
        let ok = match self.channels.get_mut(&channel) {
            Some(state) if state.channel.is_some() && !no_pty => {
                state.pty = Some(PtyRequest {
                    term: term.to_string(),
                    cols: col_width,
                    rows: row_height,
                    px: pix_width,
                    py: pix_height,
                    modes: modes.to_vec(),
                });
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // the handed proxy: its value is a private key, never a session variable nor logged
        if variable_name == hpccert_core::config::X509_PROXY_HANDOVER_ENV {
            let taken = self.proxy_handover(channel, variable_value).await;
            return Self::reply(session, channel, taken);
        }
        let allowed = spawn::env_allowed(variable_name, &self.engine.config.sshd.accept_env);
        if let (true, Some(state)) = (allowed, self.channels.get_mut(&channel)) {
            state
                .env
                .push((variable_name.to_string(), variable_value.to_string()));
        }
        Self::reply(session, channel, allowed)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let r = self.start(channel, Start::Shell, session).await;
        self.after_start(channel, r, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let r = self.start(channel, Start::Exec(command), session).await;
        self.after_start(channel, r, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let r = if name == "sftp" {
            let program = self.engine.config.sshd.sftp_server.clone();
            self.start(channel, Start::Subsystem(program), session)
                .await
        } else {
            Err(format!("unknown subsystem {name:?}"))
        };
        self.after_start(channel, r, session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            match &state.master {
                Some(m) => {
                    if let Err(e) = spawn::resize(m, col_width, row_height, pix_width, pix_height) {
                        tracing::debug!(target: "sshd_gsi::session", "window change: {e}");
                    }
                }
                None => {
                    if let Some(p) = state.pty.as_mut() {
                        (p.cols, p.rows, p.px, p.py) =
                            (col_width, row_height, pix_width, pix_height);
                    }
                }
            }
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // to the task that owns the process (ProcessOwner): it signals only while the process
        // is not reaped
        if let (Some(tx), Some(sig)) = (
            self.channels.get(&channel).and_then(|s| s.signals.as_ref()),
            pump::unix_signal(&signal),
        ) {
            let _ = tx.send(sig);
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

impl Connection {
    /// A proxy handed over in `X509_USER_PROXY_PEM` (`[sshd] x509_proxy_handover`): checked,
    /// and kept for the channel's session when it is the login's own proxy or a proxy of the
    /// login's certificate. A refusal is logged with its reason and the session runs without
    /// `X509_USER_PROXY`: the login itself was verified, only the handover fails (closed).
    async fn proxy_handover(&mut self, channel: ChannelId, pem: &str) -> bool {
        let from = match &self.login {
            Some((login, account)) => format!(
                "for {} ({}) {}",
                account.name,
                login.decision.identity(),
                auth::from(&self.peer)
            ),
            None => auth::from(&self.peer),
        };
        let refuse = |reason: &str| {
            tracing::warn!(target: "sshd_gsi::session", "proxy handover refused {from}: {reason}; the session gets no X509_USER_PROXY");
            false
        };
        if !self.engine.config.sshd.x509_proxy_handover {
            tracing::info!(target: "sshd_gsi::session", "proxy handover refused {from}: [sshd] x509_proxy_handover is off; the session gets no X509_USER_PROXY");
            return false;
        }
        let Some((login, _)) = &self.login else {
            return refuse("not authenticated");
        };
        match self.channels.get(&channel) {
            Some(state) if state.channel.is_some() => {}
            _ => return refuse("no session channel waiting for its process"),
        }
        let engine = self.engine.clone();
        let login = login.clone();
        let pem = zeroize::Zeroizing::new(pem.as_bytes().to_vec());
        let now = hpccert_core::clock::now();
        let checked =
            tokio::task::spawn_blocking(move || engine.proxy_handover(&login, &pem, now)).await;
        let result = match checked {
            Ok(r) => r,
            Err(e) => return refuse(&format!("internal error: {e}")),
        };
        match (result, self.channels.get_mut(&channel)) {
            (Ok((file, which)), Some(state)) => {
                tracing::info!(target: "sshd_gsi::session", "proxy handover accepted {from}: {which}");
                state.proxy = Some(HandedProxy::new(file));
                true
            }
            (Ok(_), None) => refuse("the channel closed"),
            (Err(reason), _) => refuse(&reason),
        }
    }

    fn after_start(
        &mut self,
        channel: ChannelId,
        r: Result<(), String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        match r {
            Ok(()) => session.channel_success(channel),
            Err(e) => {
                tracing::warn!(target: "sshd_gsi::session", "session request refused {}: {e}", auth::from(&self.peer));
                session.channel_failure(channel)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The auth adapter driven the way russh drives it: query, then signed request; and the
    //! keyboard-interactive token dialogue.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use hpccert_core::config::Config;
    use hpccert_core::dev::pki::{self, CertSpec, Credential, KeyKind};
    use russh::server::{ExternalSignature, Handler};
    use std::path::Path;

    const ALG: &str = "x509v3-ecdsa-sha2-nistp256";

    const ISSUER: &str = "https://issuer.test";

    struct Site {
        dir: tempfile::TempDir,
        ca: Credential,
        user: Credential,
        stranger: Credential,
        me: String,
        engine: SharedEngine,
        issuer: hpccert_core::dev::token::DevKey,
    }

    fn site() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let now = hpccert_core::clock::now();
        let ca =
            pki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=Test CA", now, 10).unwrap()).unwrap();
        let other_ca =
            pki::self_signed_ca(&CertSpec::ca("/O=Else/CN=Other CA", now, 10).unwrap()).unwrap();
        let spec = |dn: &str| CertSpec {
            key: KeyKind::EcP256,
            ..CertSpec::user(dn, now, 1).unwrap()
        };
        let user = pki::issue(&ca, &spec("/O=Grid/CN=alice")).unwrap();
        let stranger = pki::issue(&other_ca, &spec("/O=Grid/CN=alice")).unwrap();
        let trust = dir.path().join("certificates");
        pki::install_ca(&trust, &ca.cert, None, None).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let gridmap = dir.path().join("grid-mapfile");
        std::fs::write(&gridmap, format!("\"/O=Grid/CN=alice\" {me}\n")).unwrap();
        // a token issuer with its keys in a file, and a token map for its subject "alice"
        let issuer = hpccert_core::dev::token::DevKey::generate(
            "k1",
            hpccert_core::token::jws::JwsAlgorithm::RS256,
        )
        .unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            hpccert_core::dev::token::jwks(&[&issuer])
                .unwrap()
                .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("token-mapfile"),
            format!("\"{ISSUER}\" \"alice\" {me}\n"),
        )
        .unwrap();
        let s = |name: &str| dir.path().join(name).display().to_string();
        let text = format!(
            "version = 1\n[trust]\nca_dir = \"{}\"\n[mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\nsuspended_file = \"{}\"\nrestrictions_file = \"{}\"\n[tokens]\nkey_cache_dir = \"{}\"\n[sshd]\nmethods = [\"x509\", \"keyboard-interactive\", \"password\"]\nuse_pam = false\naudit_log = \"{}\"\n[[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"hpc\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n",
            trust.display(),
            gridmap.display(),
            s("token-mapfile"),
            s("suspended"),
            s("restrictions"),
            s("keys"),
            s("audit.jsonl"),
            jwks.display(),
        );
        let config = Config::parse(&text, Path::new("test.toml")).unwrap();
        let engine = Arc::new(crate::auth::Engine::load(config).unwrap());
        Site {
            dir,
            ca,
            user,
            stranger,
            me,
            engine,
            issuer,
        }
    }

    /// The engine's blocking HTTP client must be made and dropped outside a runtime.
    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn connection(engine: &SharedEngine) -> Connection {
        let addr: SocketAddr = "127.0.0.1:40022".parse().unwrap();
        Connection::new(engine.clone(), addr, addr, Arc::new(AuthFlag::default()))
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
        out.extend_from_slice(s);
    }

    fn blob(cred: &Credential) -> Vec<u8> {
        let mut b = Vec::new();
        string(&mut b, ALG.as_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        string(&mut b, &cred.cert.to_der().unwrap());
        b.extend_from_slice(&0u32.to_be_bytes());
        b
    }

    fn signature(cred: &Credential, data: &[u8]) -> Vec<u8> {
        let hash = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), data).unwrap();
        let sig = openssl::ecdsa::EcdsaSig::sign(&hash, &cred.key.ec_key().unwrap()).unwrap();
        let mut inner = Vec::new();
        for n in [sig.r(), sig.s()] {
            let mut v = n.to_vec();
            if v.first().is_some_and(|f| f & 0x80 != 0) {
                v.insert(0, 0);
            }
            string(&mut inner, &v);
        }
        let mut out = Vec::new();
        string(&mut out, b"ecdsa-sha2-nistp256");
        string(&mut out, &inner);
        out
    }

    #[test]
    fn x509_query_then_signed_request() {
        let s = site();
        run(async {
            let mut c = connection(&s.engine);
            let b = blob(&s.user);
            // the query: acceptable, nobody logged in yet
            let a = c
                .auth_external_publickey(&s.me, ALG, &b, None)
                .await
                .unwrap();
            assert_eq!(a, Auth::Accept);
            assert!(c.login.is_none());
            // the signed request
            let data = b"session id and request";
            let sig = signature(&s.user, data);
            let a = c
                .auth_external_publickey(
                    &s.me,
                    ALG,
                    &b,
                    Some(ExternalSignature {
                        signed_data: data,
                        signature: &sig,
                    }),
                )
                .await
                .unwrap();
            assert_eq!(a, Auth::Accept);
            let (login, account) = c.login.as_ref().unwrap();
            assert_eq!(login.method, "x509");
            assert_eq!(account.name, s.me);
            assert!(c.authenticated.is_set());
        });
    }

    #[test]
    fn x509_refusals() {
        let s = site();
        run(async {
            let b = blob(&s.user);
            let data = b"session id and request";
            // a signature over other data, or by another key
            for sig in [signature(&s.user, b"other"), signature(&s.stranger, data)] {
                let mut c = connection(&s.engine);
                let a = c
                    .auth_external_publickey(
                        &s.me,
                        ALG,
                        &b,
                        Some(ExternalSignature {
                            signed_data: data,
                            signature: &sig,
                        }),
                    )
                    .await
                    .unwrap();
                assert_eq!(a, c.reject());
                assert!(c.login.is_none());
            }
            let mut c = connection(&s.engine);
            // an untrusted CA: refused already at the query
            assert_eq!(
                c.auth_external_publickey(&s.me, ALG, &blob(&s.stranger), None)
                    .await
                    .unwrap(),
                c.reject()
            );
            // a login name the grid-mapfile does not list
            assert_eq!(
                c.auth_external_publickey("nobody", ALG, &b, None)
                    .await
                    .unwrap(),
                c.reject()
            );
            // an algorithm not enabled, and garbage
            assert_eq!(
                c.auth_external_publickey(&s.me, "x509v3-ssh-rsa", &b, None)
                    .await
                    .unwrap(),
                c.reject()
            );
            assert_eq!(
                c.auth_external_publickey(&s.me, ALG, b"\x00\x00", None)
                    .await
                    .unwrap(),
                c.reject()
            );
            assert!(c.login.is_none());
        });
    }

    #[test]
    fn keyboard_interactive_starts_with_the_token_prompt() {
        let s = site();
        run(async {
            // (the continuation of answers is tested on hpccert_core's TokenEntry: russh's Response
            // cannot be built outside russh)
            let mut c = connection(&s.engine);
            match c.auth_keyboard_interactive(&s.me, "", None).await.unwrap() {
                Auth::Partial { prompts, .. } => {
                    assert_eq!(prompts.len(), 1);
                    assert_eq!(prompts[0].0, crate::auth::FIRST_PROMPT);
                    assert!(!prompts[0].1, "the token is not echoed");
                }
                other => panic!("{other:?}"),
            }
            assert!(c.login.is_none());
        });
    }

    /// One X.509 login as clients make it: the key query, then the signed request. The
    /// decision, or the refusal logged.
    fn x509_login(s: &Site, cred: &Credential) -> Option<Login> {
        run(async {
            let mut c = connection(&s.engine);
            let b = blob(cred);
            if c.auth_external_publickey(&s.me, ALG, &b, None)
                .await
                .unwrap()
                != Auth::Accept
            {
                return None;
            }
            let data = b"session id and request";
            let sig = signature(cred, data);
            let a = c
                .auth_external_publickey(
                    &s.me,
                    ALG,
                    &b,
                    Some(ExternalSignature {
                        signed_data: data,
                        signature: &sig,
                    }),
                )
                .await
                .unwrap();
            (a == Auth::Accept).then(|| c.login.take().unwrap().0)
        })
    }

    fn token_login(s: &Site, token: &str) -> Option<Login> {
        run(async {
            let mut c = connection(&s.engine);
            let a = c
                .token_login("token (password)", &s.me, token.to_string())
                .await;
            (a == Auth::Accept).then(|| c.login.take().unwrap().0)
        })
    }

    fn token(s: &Site, sub: &str, lifetime: i64) -> String {
        let t = hpccert_core::token::unix_seconds(hpccert_core::clock::now());
        s.issuer
            .mint(&serde_json::json!({
                "iss": ISSUER, "sub": sub, "aud": "hpc", "iat": t - 1, "exp": t + lifetime,
            }))
            .unwrap()
    }

    fn audit(s: &Site) -> Vec<serde_json::Value> {
        std::fs::read_to_string(s.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Replace a file as editors and tools do (a new inode: the reload notices it at once).
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn query_and_signed_request_verify_the_chain_once_and_a_second_login_not_at_all() {
        let s = site();
        let first = x509_login(&s, &s.user).unwrap();
        assert_eq!(
            s.engine.verifications(),
            1,
            "query and signed request: one verification"
        );
        assert_eq!(first.cached, None);
        let second = x509_login(&s, &s.user).unwrap();
        assert_eq!(s.engine.verifications(), 1, "the same chain again: none");
        assert_eq!(second.cached, Some(FromCache::Decision));
        assert_eq!(second.decision, first.decision);
        // the audit stream says which decision came from the cache
        let accepted: Vec<_> = audit(&s)
            .into_iter()
            .filter(|e| e["decision"] == "accept")
            .collect();
        assert_eq!(accepted.len(), 2);
        assert!(accepted[0].get("cached").is_none(), "{}", accepted[0]);
        assert_eq!(accepted[1]["cached"], "decision");
        // the possession proof is still checked on a hit: another key's signature is refused
        run(async {
            let mut c = connection(&s.engine);
            let data = b"session id and request";
            let forged = signature(&s.stranger, data);
            let a = c
                .auth_external_publickey(
                    &s.me,
                    ALG,
                    &blob(&s.user),
                    Some(ExternalSignature {
                        signed_data: data,
                        signature: &forged,
                    }),
                )
                .await
                .unwrap();
            assert_eq!(a, c.reject());
            assert!(c.login.is_none());
        });
    }

    #[test]
    fn another_chain_with_the_same_dn_is_verified_afresh() {
        let s = site();
        x509_login(&s, &s.user).unwrap();
        assert_eq!(s.engine.verifications(), 1);
        // the same end-entity DN from an untrusted CA: verified, and refused
        assert!(x509_login(&s, &s.stranger).is_none());
        assert_eq!(s.engine.verifications(), 2);
        // the same DN from the same CA with another key: verified, and accepted
        let now = hpccert_core::clock::now();
        let again = pki::issue(
            &s.ca,
            &CertSpec {
                key: KeyKind::EcP256,
                ..CertSpec::user("/O=Grid/CN=alice", now, 1).unwrap()
            },
        )
        .unwrap();
        let login = x509_login(&s, &again).unwrap();
        assert_eq!(login.cached, None);
        assert_eq!(s.engine.verifications(), 3);
    }

    #[test]
    fn a_chain_revoked_by_a_new_crl_is_refused_at_the_next_login() {
        let s = site();
        assert!(x509_login(&s, &s.user).is_some());
        assert_eq!(
            x509_login(&s, &s.user).unwrap().cached,
            Some(FromCache::Decision)
        );
        let now = hpccert_core::clock::now();
        let crl = pki::crl(
            &s.ca,
            &[(&s.user.cert, now)],
            now,
            now + std::time::Duration::from_secs(86400),
            2,
        )
        .unwrap();
        pki::install_ca(
            &s.dir.path().join("certificates-crl"),
            &s.ca.cert,
            Some(&crl),
            None,
        )
        .unwrap();
        // only the CRL file goes into the trust directory (the CA is there already)
        let hash = pki::subject_hash(&s.ca.cert);
        std::fs::copy(
            s.dir.path().join(format!("certificates-crl/{hash}.r0")),
            s.dir.path().join(format!("certificates/{hash}.r0")),
        )
        .unwrap();
        assert!(x509_login(&s, &s.user).is_none());
        let refused = audit(&s).pop().unwrap();
        assert_eq!(refused["decision"], "refuse");
        assert!(
            refused["reasons"][0].as_str().unwrap().contains("revoked"),
            "{refused}"
        );
    }

    #[test]
    fn a_suspended_or_unmapped_identity_is_refused_at_the_next_login() {
        let s = site();
        assert!(x509_login(&s, &s.user).is_some());
        replace(
            &s.dir.path().join("suspended"),
            "dn \"/O=Grid/CN=alice\"  # ticket 1\n",
        );
        assert!(x509_login(&s, &s.user).is_none());
        let refused = audit(&s).pop().unwrap();
        assert!(
            refused["reasons"][0]
                .as_str()
                .unwrap()
                .contains("suspended"),
            "{refused}"
        );
        // lifted: accepted again, from the remembered verification (the chain's trust did
        // not change), decided now
        replace(&s.dir.path().join("suspended"), "");
        let login = x509_login(&s, &s.user).unwrap();
        assert_eq!(login.cached, Some(FromCache::Verification));
        assert_eq!(s.engine.verifications(), 1);
        assert_eq!(
            x509_login(&s, &s.user).unwrap().cached,
            Some(FromCache::Decision)
        );
        // the grid-mapfile no longer maps the DN
        replace(
            &s.dir.path().join("grid-mapfile"),
            "\"/O=Grid/CN=bob\" nobody\n",
        );
        assert!(x509_login(&s, &s.user).is_none());
        let refused = audit(&s).pop().unwrap();
        assert!(
            refused["reasons"][0]
                .as_str()
                .unwrap()
                .contains("DN not in grid-mapfile"),
            "{refused}"
        );
    }

    #[test]
    fn an_expired_chain_is_refused_at_the_next_login() {
        let s = site();
        let now = hpccert_core::clock::now();
        let b = blob(&s.user);
        let login = |at: std::time::SystemTime| {
            let presented = s.engine.x509_key(ALG, &b, at)?;
            s.engine.x509_login(
                &s.me,
                (&b, presented),
                ("127.0.0.1".parse().unwrap(), at),
                true,
            )
        };
        assert_eq!(login(now).unwrap().1, None);
        assert_eq!(login(now).unwrap().1, Some(FromCache::Decision));
        // the user certificate is valid for a day: past its end, the cache has nothing and the
        // verification refuses
        let later = now + std::time::Duration::from_secs(2 * 86400);
        let e = login(later).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        // within the TTL but after the reuse bound: verified again
        assert_eq!(s.engine.verifications(), 2);
    }

    #[test]
    fn tokens_are_reused_while_their_sources_hold() {
        let s = site();
        let t = token(&s, "alice", 3600);
        assert_eq!(token_login(&s, &t).unwrap().cached, None);
        assert_eq!(s.engine.verifications(), 1);
        let again = token_login(&s, &t).unwrap();
        assert_eq!(again.cached, Some(FromCache::Decision));
        assert_eq!(s.engine.verifications(), 1);
        assert_eq!(audit(&s).pop().unwrap()["cached"], "decision");
        // another token of the same subject is verified afresh
        let other = token(&s, "alice", 3599);
        assert_eq!(token_login(&s, &other).unwrap().cached, None);
        assert_eq!(s.engine.verifications(), 2);
        // suspended: refused at the next login
        replace(
            &s.dir.path().join("suspended"),
            &format!("token \"{ISSUER}\" \"alice\"\n"),
        );
        assert!(token_login(&s, &t).is_none());
        replace(&s.dir.path().join("suspended"), "");
        assert_eq!(
            token_login(&s, &t).unwrap().cached,
            Some(FromCache::Verification)
        );
        // the issuer's keys change (rotation): verified again, and refused when its key is gone
        let rotated = hpccert_core::dev::token::DevKey::generate(
            "k2",
            hpccert_core::token::jws::JwsAlgorithm::RS256,
        )
        .unwrap();
        replace(
            &s.dir.path().join("jwks.json"),
            &hpccert_core::dev::token::jwks(&[&rotated])
                .unwrap()
                .to_string(),
        );
        assert!(token_login(&s, &t).is_none());
        assert_eq!(s.engine.verifications(), 3);
    }
}
