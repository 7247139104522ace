// A real OpenID provider (panva/oidc-provider) on loopback, for hpccert's end-to-end token
// and browser tests (tests/tests/oidc_tokens.rs, tests/tests/openssh_pam.rs,
// tests/tests/browser_oidc.rs and the mapping portal's browser test; started by
// hpccert_e2e::oidc::Provider).
//
//   node tests/oidc/provider.mjs --port PORT --jwks PRIVATE_JWKS.json [--groups N]
//                                [--portal-redirect URL]...
//
// The issuer is http://127.0.0.1:PORT. It signs with the keys in PRIVATE_JWKS.json (a JWKS
// with private members; the test rotates keys by restarting with another file): JWT access
// tokens (RFC 9068, typ at+jwt) for the resource https://login.example.org, and ID tokens
// (RS256). Three clients:
//
//   hpc-robot   confidential (client_secret_basic, secret "robot-secret"), client_credentials
//   hpc-cli     public (no secret), authorization code with PKCE S256, redirect
//               http://127.0.0.1/callback
//   hpc-portal  confidential web application (client_secret_basic, secret "portal-secret"),
//               authorization code with PKCE S256, redirect URIs from --portal-redirect; no
//               post-logout redirect. Scopes openid email profile org.cilogon.userinfo.
//
// The two code flow clients log in through the built-in development login and consent pages
// (features.devInteractions: any login name, any password). The account of login name L has
// CILogon-like claims: sub L, email and eppn L@example.org (email_verified true), name
// "Test User L", idp https://idp.example.org/idp/shibboleth, idp_name "Example University",
// cert_subject_dn "/DC=org/DC=cilogon/C=US/O=Example University/CN=Test User L A<digits>"
// (the digits derived from L, so the same login always has the same DN) and isMemberOf
// ["/hpc/users"]. Scopes give claims as CILogon does: openid sub; email email,
// email_verified; profile name, given_name, family_name; org.cilogon.userinfo
// cert_subject_dn, eppn, idp, idp_name, isMemberOf. They are in the ID token as well as at
// userinfo (conformIdTokenClaims false).
//
// Access tokens: a request that names the resource (or any request of hpc-robot and
// hpc-cli, which default to it) gets a JWT access token for it, carrying wlcg.ver "1.0" and
// wlcg.groups ["/hpc", "/hpc/users"] (then the --groups entries). An hpc-portal request
// without a resource gets an opaque access token for userinfo (an OIDC login at a web
// application, as CILogon does), with an ID token.
//
// When the server listens, "READY http://127.0.0.1:PORT" is printed on stdout.
//
// Options:
//   --audience URL         the one resource (default https://login.example.org)
//   --ttl SECONDS          access token lifetime (default 3600)
//   --groups N             N more wlcg.groups entries, "/hpc/project-000000" to
//                          "/hpc/project-<N-1>" (six digits), as real tokens of users in many
//                          projects carry: each adds 22 bytes of JSON, about 30 bytes of token.
//                          A client credentials token is about 800 bytes without them and
//                          about 2 KB with --groups 44 (2048 to 2200 bytes: more than stock
//                          OpenSSH sends in one keyboard-interactive answer).
//   --portal-redirect URL  a redirect URI of hpc-portal (repeatable; exact match, so give the
//                          portal's full callback URL with its port). Without one, hpc-portal
//                          has the single redirect http://127.0.0.1/login/callback (port 80;
//                          a placeholder that keeps the client valid: the provider refuses a
//                          web client without a redirect URI).

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    jwks: { type: 'string' },
    audience: { type: 'string', default: 'https://login.example.org' },
    ttl: { type: 'string', default: '3600' },
    groups: { type: 'string', default: '0' },
    'portal-redirect': { type: 'string', multiple: true, default: [] },
  },
});
if (!args.port || !args.jwks) {
  process.stderr.write('usage: node provider.mjs --port PORT --jwks PRIVATE_JWKS.json\n');
  process.exit(2);
}

const port = Number.parseInt(args.port, 10);
const issuer = `http://127.0.0.1:${port}`;
const audience = args.audience;
const ttl = Number.parseInt(args.ttl, 10);
const extraGroups = Number.parseInt(args.groups, 10);
if (!Number.isInteger(extraGroups) || extraGroups < 0 || extraGroups > 999999) {
  process.stderr.write(`--groups: not a count: ${args.groups}\n`);
  process.exit(2);
}
const groups = [
  '/hpc',
  '/hpc/users',
  ...Array.from({ length: extraGroups }, (_, i) => `/hpc/project-${String(i).padStart(6, '0')}`),
];
const jwks = JSON.parse(readFileSync(args.jwks, 'utf8'));
const resourceScope = 'compute.create storage.read:/home';
const portalRedirects = args['portal-redirect'].length
  ? args['portal-redirect']
  : ['http://127.0.0.1/login/callback'];
for (const uri of portalRedirects) {
  if (!URL.canParse(uri)) {
    process.stderr.write(`--portal-redirect: not a URL: ${uri}\n`);
    process.exit(2);
  }
}

// The CILogon-like claims of the account with login name `login`.
function accountClaims(login) {
  // a stable 7-digit serial from the login name (FNV-1a), as CILogon's "A1234567" suffix
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(login, 'utf8')) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  const serial = String(hash % 10000000).padStart(7, '0');
  return {
    sub: login,
    email: `${login}@example.org`,
    email_verified: true,
    name: `Test User ${login}`,
    given_name: 'Test User',
    family_name: login,
    eppn: `${login}@example.org`,
    idp: 'https://idp.example.org/idp/shibboleth',
    idp_name: 'Example University',
    cert_subject_dn: `/DC=org/DC=cilogon/C=US/O=Example University/CN=Test User ${login} A${serial}`,
    isMemberOf: ['/hpc/users'],
  };
}

const provider = new Provider(issuer, {
  jwks,
  clients: [
    {
      client_id: 'hpc-robot',
      client_secret: 'robot-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'hpc-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    {
      client_id: 'hpc-portal',
      client_secret: 'portal-secret',
      application_type: 'web',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: portalRedirects,
      post_logout_redirect_uris: [],
      scope: 'openid email profile org.cilogon.userinfo',
    },
  ],
  // any login name is an account whose sub is that name
  findAccount: (_ctx, sub) => ({
    accountId: sub,
    claims: () => accountClaims(sub),
  }),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
    'org.cilogon.userinfo': ['cert_subject_dn', 'eppn', 'idp', 'idp_name', 'isMemberOf'],
  },
  // the scopes' claims in the ID token too, not only at userinfo (as CILogon does)
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // without a resource parameter the token is for the resource, except that an OIDC
      // login of the portal gets an opaque access token for userinfo (oneOf: the resources
      // a grant holds when a token request names none)
      defaultResource: (_ctx, client, oneOf) =>
        oneOf ?? (client?.clientId === 'hpc-portal' ? undefined : audience),
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: resourceScope,
          audience,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: () => ({
    'wlcg.ver': '1.0',
    'wlcg.groups': groups,
  }),
  ttl: {
    AccessToken: ttl,
    ClientCredentials: ttl,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  cookies: { keys: ['hpccert-test-cookie-key'] },
  renderError: (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

for (const event of ['server_error', 'grant.error', 'authorization.error', 'interaction.error']) {
  provider.on(event, (_ctx, err) => {
    process.stderr.write(`${event}: ${err?.message ?? err} ${err?.error_description ?? ''}\n`);
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`cannot listen on 127.0.0.1:${port}: ${err.message}\n`);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
