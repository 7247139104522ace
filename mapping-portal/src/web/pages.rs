//! The pages, server-rendered with maud (every value is HTML-escaped by the macro). No
//! JavaScript; one stylesheet from the portal itself, so that the Content-Security-Policy can
//! forbid everything else.

use hpccert_core::trust::x509::format_unix;
use maud::{DOCTYPE, Markup, html};

use super::dnproof::Challenge;
use super::session::User;
use crate::model::{
    AuditEntry, IdentityKind, IssuedCertificate, Link, LinkState, Suspension, SuspensionTarget,
};

pub const STYLESHEET: &str = include_str!("portal.css");

/// What every page shows in its header.
#[derive(Debug)]
pub struct Frame<'a> {
    /// `mapping-portal --dev`: a banner says so.
    pub dev: bool,
    /// The portal is an SSH CA: the nav links the "SSH certificate" page.
    pub ssh_ca: bool,
    pub user: Option<&'a User>,
    pub csrf: Option<&'a str>,
    pub flash: Option<&'a str>,
}

pub fn layout(title: &str, frame: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hpccert mapping portal" }
                link rel="stylesheet" href="/static/portal.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "hpccert mapping portal" }
                    @if let Some(user) = frame.user {
                        nav aria-label="Account" {
                            span.who { (display_name(user)) }
                            @if frame.ssh_ca { a href="/ssh" { "SSH certificate" } }
                            @if user.admin { a href="/admin" { "Admin" } }
                            @if let Some(csrf) = frame.csrf {
                                form.inline method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                @if frame.dev {
                    p.devmode role="note" {
                        strong { "Development mode." }
                        " mapping-portal --dev: a temporary or dev database, the built-in dev "
                        "identity provider and dev accounts. Never use it for a real site."
                    }
                }
                main #main {
                    @if let Some(flash) = frame.flash {
                        p.flash role="status" { (flash) }
                    }
                    (body)
                }
            }
        }
    }
}

pub fn display_name(user: &User) -> String {
    user.profile
        .name
        .clone()
        .or_else(|| user.profile.email.clone())
        .unwrap_or_else(|| user.subject.clone())
}

pub fn error(title: &str, message: &str, frame: &Frame<'_>) -> Markup {
    layout(
        title,
        frame,
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href="/" { "Back to the start page" } }
        },
    )
}

pub fn welcome(login_configured: bool, proof_by_header: bool, frame: &Frame<'_>) -> Markup {
    layout(
        "Welcome",
        frame,
        html! {
            h1 { "Link your identity to your HPC account" }
            p {
                "Science gateways and command-line tools log in to this site's login nodes with "
                "your institution's identity: an access token or a certificate from CILogon. "
                "Here you tell the login nodes which local account that identity belongs to."
            }
            ol.steps {
                li { "Log in with your institution." }
                @if proof_by_header {
                    li { "Confirm your local account (the site's sign-on names it)." }
                } @else {
                    li { "Prove that you own your local account (its password)." }
                }
                li { "Link them. You can remove the link at any time." }
            }
            @if login_configured {
                p { a.button href="/login" { "Log in with your institution" } }
            } @else {
                p.error {
                    "Login is not configured on this portal: the administrator must set "
                    code { "[portal.oidc]" } " in its configuration."
                }
            }
        },
    )
}

#[derive(Debug)]
pub struct HomeView<'a> {
    pub user: &'a User,
    pub csrf: &'a str,
    pub links: &'a [Link],
    pub suspended: &'a [Suspension],
    pub proof_by_header: Option<Option<String>>,
    pub approval_needed: bool,
    /// The challenge to sign, when users may prove a certificate DN.
    pub dn_challenge: Option<&'a Challenge>,
    /// `--dev`: the dev accounts that the account proof accepts, shown on the page.
    pub dev_accounts: Option<&'a [super::DevAccount]>,
}

fn identity_text(link_kind: IdentityKind, issuer: &str, subject: &str) -> Markup {
    html! {
        @match link_kind {
            IdentityKind::Token => { span.kind { "Token identity" } " " code { (subject) } " from " code { (issuer) } }
            IdentityKind::Dn => { span.kind { "Certificate DN" } " " code { (subject) } }
        }
    }
}

fn state_label(state: LinkState) -> &'static str {
    match state {
        LinkState::Active => "active",
        LinkState::Pending => "awaiting approval",
    }
}

pub fn home(view: &HomeView<'_>, frame: &Frame<'_>) -> Markup {
    let user = view.user;
    layout(
        "Your links",
        frame,
        html! {
            h1 { "Your identity" }
            dl.identity {
                dt { "Name" } dd { (display_name(user)) }
                @if let Some(email) = &user.profile.email { dt { "Email" } dd { (email) } }
                @if let Some(idp) = &user.idp_name { dt { "Institution" } dd { (idp) } }
                dt { "Issuer" } dd { code { (user.issuer) } }
                dt { "Subject" } dd { code { (user.subject) } }
                @for k in user.identities.iter().filter(|k| k.kind() == IdentityKind::Dn) {
                    dt { "Certificate DN" } dd { code { (k.subject()) } }
                }
            }
            @for s in view.suspended {
                p.error role="alert" {
                    "Suspended: " (suspension_target(&s.target)) ". Reason: " (s.reason)
                    ". Logins with it are refused on every login node."
                }
            }
            h2 { "Your links" }
            @if view.links.is_empty() {
                p #no-links { "No account is linked to your identity yet." }
            } @else {
                table.links #links {
                    thead { tr { th scope="col" { "Identity" } th scope="col" { "Account" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for link in view.links {
                            tr {
                                td { (identity_text(link.identity.kind(), link.identity.issuer(), link.identity.subject())) }
                                td.account { (link.account) }
                                td.state { (state_label(link.state)) }
                                td {
                                    form method="post" action="/unlink" {
                                        input type="hidden" name="csrf" value=(view.csrf);
                                        input type="hidden" name="kind" value=(link.identity.kind().as_str());
                                        input type="hidden" name="subject" value=(link.identity.subject());
                                        input type="hidden" name="account" value=(link.account);
                                        button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Link a local account" }
            @if view.approval_needed {
                p { "An administrator approves new links before the login nodes use them." }
            }
            @match &view.proof_by_header {
                Some(Some(account)) => {
                    form.card method="post" action="/link" {
                        input type="hidden" name="csrf" value=(view.csrf);
                        input type="hidden" name="account" value=(account);
                        p { "The site's sign-on says you are " strong { (account) } "." }
                        button type="submit" { "Link to " (account) }
                    }
                }
                Some(None) => {
                    p.error { "The site's sign-on did not name your account: open this portal through the site's sign-on." }
                }
                None => {
                    form.card method="post" action="/link" {
                        input type="hidden" name="csrf" value=(view.csrf);
                        label for="account" { "Local account name" }
                        input #account type="text" name="account" required autocomplete="username" autocapitalize="none" spellcheck="false";
                        label for="password" { "Its password" }
                        input #password type="password" name="password" required autocomplete="current-password";
                        p.hint { "The password is checked once and never stored." }
                        button type="submit" { "Prove and link" }
                    }
                    @if let Some(accounts) = view.dev_accounts {
                        p.devmode #dev-accounts {
                            "Development mode: the proof asks no PAM; it accepts only these dev "
                            "accounts: "
                            @for (i, a) in accounts.iter().enumerate() {
                                @if i > 0 { ", " }
                                code.dev-account { (a.name) } " (password " code.dev-password { (a.password) } ")"
                            }
                            "."
                        }
                    }
                }
            }
            @if let Some(challenge) = view.dn_challenge {
                (dn_proof_form(view.csrf, challenge))
            }
        },
    )
}

/// Proving a certificate DN by signing the challenge with the `openssl` command line.
fn dn_proof_form(csrf: &str, challenge: &Challenge) -> Markup {
    let sign = format!(
        "printf '%s' '{}' | openssl dgst -sha256 -sign",
        challenge.text
    );
    html! {
        h2 #dn-proof { "Add a certificate DN" }
        p {
            "Link a certificate DN your identity provider does not name (an older CILogon "
            "certificate, another grid CA's) by signing this portal's challenge with the "
            "certificate's key. The key never leaves your computer."
        }
        form.card.wide method="post" action="/dn" {
            input type="hidden" name="csrf" value=(csrf);
            p {
                "The challenge, for one answer until "
                time datetime=(format_unix(challenge.expires_unix)) { (format_unix(challenge.expires_unix)) }
                ":"
            }
            pre #dn-challenge { code { (challenge.text) } }
            p { "With the certificate and its key in " code { "~/.globus" } ", run:" }
            pre { code { (sign) " ~/.globus/userkey.pem | openssl base64" "\n" "cat ~/.globus/usercert.pem" } }
            p.hint {
                "Use the certificate's own key: a proxy (" code { "grid-proxy-init" } ") is not "
                "accepted here. For a PKCS#12 file from a browser, first extract them with "
                code { "openssl pkcs12 -in cert.p12 -nokeys -clcerts -out usercert.pem" } " and "
                code { "openssl pkcs12 -in cert.p12 -nocerts -out userkey.pem" } "."
            }
            label for="signature" { "The signature (the first command's output)" }
            textarea #signature name="signature" rows="4" required spellcheck="false" {}
            label for="certificates" { "The certificate (the second command's output; never the key)" }
            textarea #certificates name="certificates" rows="8" required spellcheck="false" {}
            button type="submit" { "Prove the DN" }
            p.hint { "Then link it to your account with the form above." }
        }
    }
}

fn suspension_target(target: &SuspensionTarget) -> Markup {
    html! {
        @match target {
            SuspensionTarget::Identity(k) => (identity_text(k.kind(), k.issuer(), k.subject())),
            SuspensionTarget::Account(a) => { "account " code { (a) } }
        }
    }
}

#[derive(Debug)]
pub struct AdminView<'a> {
    pub csrf: &'a str,
    pub search: &'a str,
    pub links: &'a [Link],
    pub suspensions: &'a [Suspension],
    /// The SSH CA's unexpired certificates, newest first.
    pub certificates: &'a [IssuedCertificate],
}

fn identity_fields(csrf: &str, kind: IdentityKind, issuer: &str, subject: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="kind" value=(kind.as_str());
        input type="hidden" name="issuer" value=(issuer);
        input type="hidden" name="subject" value=(subject);
    }
}

pub fn admin(view: &AdminView<'_>, frame: &Frame<'_>) -> Markup {
    let csrf = view.csrf;
    layout(
        "Admin",
        frame,
        html! {
            h1 { "Links" }
            p { a href="/admin/audit" { "Audit log" } }
            form.search method="get" action="/admin" role="search" {
                label for="q" { "Search accounts, identities, emails" }
                input #q type="search" name="q" value=(view.search);
                button type="submit" { "Search" }
            }
            table.links #admin-links {
                thead { tr { th scope="col" { "Identity" } th scope="col" { "Person" } th scope="col" { "Account" } th scope="col" { "State" } th scope="col" { "Since" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for (i, link) in view.links.iter().enumerate() {
                        tr {
                            td { (identity_text(link.identity.kind(), link.identity.issuer(), link.identity.subject())) }
                            td { (link.profile.name.as_deref().or(link.profile.email.as_deref()).unwrap_or("")) }
                            td.account { (link.account) }
                            td.state { (state_label(link.state)) }
                            td { (format_unix(link.created)) }
                            td.actions {
                                @if link.state == LinkState::Pending {
                                    form method="post" action="/admin/approve" {
                                        (identity_fields(csrf, link.identity.kind(), link.identity.issuer(), link.identity.subject()))
                                        input type="hidden" name="account" value=(link.account);
                                        button type="submit" { "Approve" }
                                    }
                                }
                                form method="post" action="/admin/suspend" {
                                    (identity_fields(csrf, link.identity.kind(), link.identity.issuer(), link.identity.subject()))
                                    input type="hidden" name="target" value="identity";
                                    label.visually-hidden for={"reason-" (i)} { "Reason for suspending " (link.identity.subject()) }
                                    input id={"reason-" (i)} type="text" name="reason" placeholder="reason" required;
                                    button.danger type="submit" { "Suspend identity" }
                                }
                            }
                        }
                    }
                }
            }
            @if !view.certificates.is_empty() {
                h2 { "SSH certificates" }
                p { "Certificates of the site's SSH CA that have not expired. A revoked one is refused by every login node from its next sync (the KRL); suspending an identity or an account revokes all of its certificates." }
                table.links #certificates {
                    thead { tr { th scope="col" { "Serial" } th scope="col" { "Identity" } th scope="col" { "Accounts" } th scope="col" { "Until" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for c in view.certificates {
                            tr {
                                td { code { (c.serial) } }
                                td { (identity_text(c.identity.kind(), c.identity.issuer(), c.identity.subject())) }
                                td { (c.accounts.join(", ")) }
                                td { (format_unix(c.valid_before)) }
                                td {
                                    @match (&c.revoked_at, &c.revoked_reason) {
                                        (Some(_), reason) => { "revoked" @if let Some(r) = reason { ": " (r) } }
                                        (None, _) => { "valid" }
                                    }
                                }
                                td {
                                    @if c.revoked_at.is_none() {
                                        form.inline method="post" action="/admin/revoke-certificate" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="serial" value=(c.serial);
                                            label.visually-hidden for=(format!("reason-{}", c.serial)) { "Reason" }
                                            input id=(format!("reason-{}", c.serial)) type="text" name="reason" placeholder="reason" required;
                                            button.danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Suspensions" }
            @if view.suspensions.is_empty() {
                p { "Nothing is suspended." }
            } @else {
                table.links #suspensions {
                    thead { tr { th scope="col" { "What" } th scope="col" { "Reason" } th scope="col" { "By" } th scope="col" { "When" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for s in view.suspensions {
                            tr {
                                td { (suspension_target(&s.target)) }
                                td { (s.reason) }
                                td { (s.by) }
                                td { (format_unix(s.at)) }
                                td {
                                    form method="post" action="/admin/unsuspend" {
                                        @match &s.target {
                                            SuspensionTarget::Identity(k) => {
                                                (identity_fields(csrf, k.kind(), k.issuer(), k.subject()))
                                                input type="hidden" name="target" value="identity";
                                            }
                                            SuspensionTarget::Account(a) => {
                                                input type="hidden" name="csrf" value=(csrf);
                                                input type="hidden" name="target" value="account";
                                                input type="hidden" name="account" value=(a);
                                            }
                                        }
                                        button type="submit" { "Unsuspend" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Suspend an account" }
            form.card method="post" action="/admin/suspend" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="target" value="account";
                label for="suspend-account" { "Account" }
                input #suspend-account type="text" name="account" required;
                label for="suspend-reason" { "Reason" }
                input #suspend-reason type="text" name="reason" required;
                button.danger type="submit" { "Suspend account" }
            }
        },
    )
}

pub fn audit(entries: &[AuditEntry], frame: &Frame<'_>) -> Markup {
    layout(
        "Audit log",
        frame,
        html! {
            h1 { "Audit log" }
            p { a href="/admin" { "Back to the links" } }
            table.links #audit {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "From" } th scope="col" { "What" } th scope="col" { "Target" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (format_unix(e.at)) }
                            td { (e.actor) }
                            td { (e.from_addr.as_deref().unwrap_or("")) }
                            td { (e.action) }
                            td { (e.target) }
                            td { (e.detail) }
                        }
                    }
                }
            }
        },
    )
}

/// The "SSH certificate" page: paste a public key, get a short-lived OpenSSH certificate for
/// the linked accounts; or the answer to that.
pub fn ssh_certificate(
    csrf: &str,
    outcome: Option<Result<&crate::sshca::SessionCertificate, &str>>,
    made_key: Option<&str>,
    frame: &Frame<'_>,
) -> Markup {
    layout(
        "SSH certificate",
        frame,
        html! {
            h1 { "SSH certificate" }
            @match outcome {
                Some(Ok(cert)) => {
                    p.flash role="status" #issued {
                        "Certificate " code { (cert.serial) } " for " strong { (cert.principals.join(", ")) }
                        ", valid until " (format_unix(i64::try_from(cert.valid_before).unwrap_or(i64::MAX))) "."
                    }
                    @if let Some(private) = made_key {
                        p.error role="alert" {
                            "This page is the only copy of the private key below: the portal did not keep it. "
                            "Save it now, readable only by you, and do not reload this page."
                        }
                        p { "Save the key as " code { "~/.ssh/hpccert" } " (then " code { "chmod 600 ~/.ssh/hpccert" } ") and the certificate beside it as " code { "~/.ssh/hpccert-cert.pub" } "; log in with " code { "ssh -i ~/.ssh/hpccert ACCOUNT@LOGIN-NODE" } "." }
                        label for="private_key" { "Private key (OpenSSH format, not encrypted)" }
                        textarea #private_key readonly rows="8" autocomplete="off" spellcheck="false" { (private) }
                    } @else {
                        p { "Save it beside your key, as " code { "KEY-cert.pub" } " (for " code { "~/.ssh/id_ed25519" } ": " code { "~/.ssh/id_ed25519-cert.pub" } "). OpenSSH, VS Code and most clients then use it; or name it: " code { "ssh -i ~/.ssh/id_ed25519 -o CertificateFile=~/.ssh/id_ed25519-cert.pub ACCOUNT@LOGIN-NODE" } }
                    }
                    label for="certificate" { "Certificate" }
                    textarea #certificate readonly rows="6" { (cert.certificate) }
                }
                Some(Err(reason)) => {
                    p.error role="alert" #refused { "No certificate: " (reason) }
                }
                None => {}
            }
            p {
                "A short-lived OpenSSH certificate lets any SSH client log in to this site's login "
                "nodes as the accounts linked to your identity. Paste your public key (the "
                code { ".pub" } " file: Ed25519, ECDSA P-256/384 or RSA of 3072 bits or more). "
                "Your private key never leaves your computer."
            }
            form.card.wide method="post" action="/ssh" {
                input type="hidden" name="csrf" value=(csrf);
                label for="public_key" { "Public key" }
                textarea #public_key name="public_key" rows="3" required placeholder="ssh-ed25519 AAAA... you@laptop" {}
                label for="principals" { "Accounts (empty: all linked accounts)" }
                input #principals type="text" name="principals" autocapitalize="none" spellcheck="false";
                button type="submit" { "Get a certificate" }
                p { "No key at hand? The portal can make an Ed25519 key pair for you: it is shown once, in the answer to this form, and never kept." }
                button #generate type="submit" name="generate" value="key" formnovalidate { "Make a key pair and a certificate" }
            }
        },
    )
}
