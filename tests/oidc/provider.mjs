// A real OpenID provider (panva/oidc-provider) on loopback, for hpccert's end-to-end token
// tests (tests/tests/oidc_tokens.rs, tests/tests/openssh_pam.rs; started by
// hpccert_e2e::oidc::Provider).
//
//   node tests/oidc/provider.mjs --port PORT --jwks PRIVATE_JWKS.json [--groups N]
//
// The issuer is http://127.0.0.1:PORT. It signs JWT access tokens (RFC 9068, typ at+jwt) for
// the resource https://login.example.org with the keys in PRIVATE_JWKS.json (a JWKS with
// private members; the test rotates keys by restarting with another file). Two clients:
//
//   hpc-robot  confidential (client_secret_basic, secret "robot-secret"), client_credentials
//   hpc-cli    public (no secret), authorization code with PKCE S256, redirect
//              http://127.0.0.1/callback; log in through the built-in development login and
//              consent pages (features.devInteractions: any login name, any password).
//
// Every access token carries wlcg.ver "1.0" and wlcg.groups ["/hpc", "/hpc/users"] (then the
// --groups entries). When the server listens, "READY http://127.0.0.1:PORT" is printed on
// stdout.
//
// Options:
//   --audience URL  the one resource (default https://login.example.org)
//   --ttl SECONDS   access token lifetime (default 3600)
//   --groups N      N more wlcg.groups entries, "/hpc/project-000000" to "/hpc/project-<N-1>"
//                   (six digits), as real tokens of users in many projects carry: each adds
//                   22 bytes of JSON, about 30 bytes of token. A client credentials token
//                   is about 800 bytes without them and about 2 KB with --groups 44 (2048
//                   to 2200 bytes: more than stock OpenSSH sends in one keyboard-interactive
//                   answer).

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
  ],
  // any login name is an account whose sub is that name (the default findAccount)
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? audience,
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
