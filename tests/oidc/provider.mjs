// A real OpenID provider (panva/oidc-provider) on loopback, for hpccert's end-to-end token
// and browser tests (tests/tests/oidc_tokens.rs, tests/tests/openssh_pam.rs,
// tests/tests/browser_oidc.rs, tests/tests/oidc_client_flows.rs and the mapping portal's
// browser test; started by hpccert_e2e::oidc::Provider).
//
//   node tests/oidc/provider.mjs --port PORT --jwks PRIVATE_JWKS.json [--groups N]
//                                [--portal-redirect URL]... [--device-interval SECONDS]
//                                [--robot-jwks PUBLIC_JWKS.json]
//
// The issuer is http://127.0.0.1:PORT. It signs with the keys in PRIVATE_JWKS.json (a JWKS
// with private members; the test rotates keys by restarting with another file): JWT access
// tokens (RFC 9068, typ at+jwt) for the resource https://login.example.org, and ID tokens
// (RS256). The clients:
//
//   hpc-robot      confidential (client_secret_basic, secret "robot-secret"),
//                  client_credentials
//   hpc-robot-jwt  confidential, RFC 7523 private_key_jwt (an assertion signed with a key of
//                  the JWKS given by --robot-jwks: RS256, ES256 or another algorithm of
//                  oidc-provider's default list; iss and sub the client id, aud the token
//                  endpoint or the issuer, a jti used once, exp), client_credentials. Only
//                  when --robot-jwks is given.
//   hpc-cli        public native client (no secret): authorization code with PKCE S256, and
//                  the device authorization grant (RFC 8628). Redirect URIs
//                  http://127.0.0.1/callback and http://127.0.0.1/; being native, a loopback
//                  redirect matches them whatever its port (RFC 8252 7.3: oidc-provider
//                  compares http://127.0.0.1, localhost and [::1] redirects of native clients
//                  without their port), so http://127.0.0.1:PORT/ is accepted for any PORT.
//                  Only the port may differ: another path, another loopback name
//                  (localhost, [::1]) or https is refused (invalid_redirect_uri).
//   hpc-portal     confidential web application (client_secret_basic, secret
//                  "portal-secret"), authorization code with PKCE S256, redirect URIs from
//                  --portal-redirect; no post-logout redirect. Scopes openid email profile
//                  org.cilogon.userinfo.
//
// The code flow clients (and the device flow) log in through the built-in development login
// and consent pages (features.devInteractions: any login name, any password; both pages have
// a "[ Cancel ]" link, /interaction/UID/abort, which ends the login with access_denied). The
// account of login name L has CILogon-like claims: sub L, email and eppn L@example.org (email_verified true), name
// "Test User L", idp https://idp.example.org/idp/shibboleth, idp_name "Example University",
// cert_subject_dn "/DC=org/DC=cilogon/C=US/O=Example University/CN=Test User L A<digits>"
// (the digits derived from L, so the same login always has the same DN) and isMemberOf
// ["/hpc/users"]. Scopes give claims as CILogon does: openid sub; email email,
// email_verified; profile name, given_name, family_name; org.cilogon.userinfo
// cert_subject_dn, eppn, idp, idp_name, isMemberOf. They are in the ID token as well as at
// userinfo (conformIdTokenClaims false).
//
// Device flow (features.deviceFlow, hpc-cli only): POST /device/auth (client_id, scope,
// optional resource) answers device_code, user_code (XXXX-XXXX), verification_uri
// http://127.0.0.1:PORT/device, verification_uri_complete .../device?user_code=XXXX-XXXX,
// expires_in 600 and interval (--device-interval; oidc-provider itself names none). The user's
// pages are oidc-provider's own: verification_uri_complete posts the code by script to a
// "Confirm Device" page showing the code, with "Continue" and "[ Abort ]" (abort: the device
// gets access_denied); then the development login (skipped while the browser's session at the
// provider lasts) and consent pages; then "Sign-in Success", or "The Sign-in request was
// interrupted" after a Cancel. The device polls POST /token with grant_type
// urn:ietf:params:oauth:grant-type:device_code, client_id and device_code: authorization_pending
// until the user is done, then the tokens exactly as the code flow gives them (the JWT for the
// resource, the default resource when the request named none, and an ID token when openid was
// asked for; no refresh token), or access_denied, or expired_token; a used code is
// invalid_grant.
//
// slow_down (RFC 8628 3.5), which oidc-provider never answers by itself, is added here: a poll
// of a still pending device code that comes sooner than the code's interval after its previous
// pending poll gets 400 {"error":"slow_down"} instead of authorization_pending, and the code's
// interval grows by 5 seconds for that and every later poll (as the RFC tells clients to do),
// so a client that keeps polling at the old pace keeps getting slow_down. The first poll of a
// code is never too fast (the interval runs between polls, not from /device/auth). Only
// pending answers change: an approved, refused or expired code gets its final answer however
// fast it is polled.
//
// Access tokens: a request that names the resource (or any request of hpc-robot,
// hpc-robot-jwt and hpc-cli, code or device flow, which default to it) gets a JWT access
// token for it, carrying wlcg.ver "1.0" and wlcg.groups ["/hpc", "/hpc/users"] (then the
// --groups entries). An hpc-portal request without a resource gets an opaque access token for
// userinfo (an OIDC login at a web application, as CILogon does), with an ID token.
//
// When the server listens, "READY http://127.0.0.1:PORT" is printed on stdout.
//
// Options:
//   --audience URL         the one resource (default https://login.example.org)
//   --ttl SECONDS          access token lifetime (default 3600)
//   --scope SCOPES         the resource's scopes, which its tokens carry (default
//                          "compute.create storage.read:/home")
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
//   --device-interval S    the device flow's polling interval in seconds, 1 to 600 (default 5,
//                          RFC 8628's default; tests use 1 to be quick)
//   --robot-jwks PATH      the public JWKS (no private members: oidc-provider refuses them) of
//                          hpc-robot-jwt, which exists only with this option

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    jwks: { type: 'string' },
    audience: { type: 'string', default: 'https://login.example.org' },
    ttl: { type: 'string', default: '3600' },
    groups: { type: 'string', default: '0' },
    'portal-redirect': { type: 'string', multiple: true, default: [] },
    scope: { type: 'string', default: 'compute.create storage.read:/home' },
    'device-interval': { type: 'string', default: '5' },
    'robot-jwks': { type: 'string' },
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
const deviceInterval = Number.parseInt(args['device-interval'], 10);
if (!Number.isInteger(deviceInterval) || deviceInterval < 1 || deviceInterval > 600) {
  process.stderr.write(`--device-interval: not a number of seconds (1 to 600): ${args['device-interval']}\n`);
  process.exit(2);
}
// the public JWKS of hpc-robot-jwt (private_key_jwt); without it that client does not exist
const robotJwks = args['robot-jwks']
  ? JSON.parse(readFileSync(args['robot-jwks'], 'utf8'))
  : undefined;
const resourceScope = args.scope;
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
      // native: a loopback redirect matches a registered one whatever its port (RFC 8252
      // 7.3), so http://127.0.0.1:PORT/ matches http://127.0.0.1/
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', DEVICE_CODE_GRANT],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/'],
    },
    ...(robotJwks
      ? [{
        client_id: 'hpc-robot-jwt',
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: robotJwks,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      }]
      : []),
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
    // RFC 8628: /device/auth, and the user's pages at /device (code entry and confirmation,
    // oidc-provider's own), then the same login and consent pages as the code flow
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // without a resource parameter the token is for the resource, except that an OIDC
      // login of the portal gets an opaque access token for userinfo (oneOf: the resources
      // a grant holds when a token request names none). hpc-cli's device code grant is
      // covered too: it gets the same JWT as its code flow.
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

// RFC 8628 3.2: the device authorization answer names the polling interval (oidc-provider
// leaves it out, which means 5 seconds)
provider.on('device_authorization.success', (_ctx, body) => {
  body.interval = deviceInterval;
});

// RFC 8628 3.5 slow_down, which oidc-provider never answers by itself: a poll for a device
// code that is still pending, sooner than the interval after the previous pending poll of that
// code, gets slow_down instead of authorization_pending, and the code's interval grows by 5
// seconds for every later poll (as the RFC tells the client to). Only pending answers are
// changed: an approved, denied or expired code gets its final answer however fast it is
// polled. The first poll is never too fast.
const devicePolls = new Map(); // device_code -> { at (ms), interval (s), until (ms) }
provider.use(async (ctx, next) => {
  await next();
  if (
    ctx.oidc?.route !== 'token'
    || ctx.oidc.params?.grant_type !== DEVICE_CODE_GRANT
    || ctx.status !== 400
    || ctx.body?.error !== 'authorization_pending'
  ) {
    return;
  }
  const code = String(ctx.oidc.params.device_code);
  const now = Date.now();
  for (const [key, poll] of devicePolls) {
    if (poll.until < now) devicePolls.delete(key);
  }
  const poll = devicePolls.get(code)
    ?? { at: undefined, interval: deviceInterval, until: now + 3600 * 1000 };
  if (poll.at !== undefined && now - poll.at < poll.interval * 1000) {
    poll.interval += 5;
    // (the grant.error line logged for this poll said authorization_pending)
    process.stderr.write(`device poll too fast: slow_down, interval now ${poll.interval} s\n`);
    ctx.body = {
      error: 'slow_down',
      error_description: `polled sooner than the interval: poll every ${poll.interval} seconds`,
    };
  }
  poll.at = now;
  devicePolls.set(code, poll);
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
