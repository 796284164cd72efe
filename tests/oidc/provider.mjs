// A real OpenID Connect provider (the certified `oidc-provider` package) for the
// integration tests: `node provider.mjs --port P --issuer URL --jwks FILE [--config FILE]`.
//
// --jwks: a JSON Web Key Set of PRIVATE keys; the first key signs. Rotating the signing key
//   means restarting with a new file (the new key first, the old one after it if tokens
//   already issued should stay valid).
// --config: JSON {"clients": [client metadata...], "claims": {"<client id or account id>":
//   {claims added to its access tokens}}, "resource": "urn:urbanos"}; without it one
//   client-credentials client `service` / `service-secret` and one authorization-code
//   client `webapp` (public, PKCE) are registered.
//
// Access tokens for the resource (RFC 8707 resource indicator, default "urn:urbanos") are
// JWTs (RFC 9068) whose audience is the resource. Prints "listening <port>" when ready.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.OIDC_PORT ?? '0' },
    issuer: { type: 'string', default: process.env.OIDC_ISSUER },
    jwks: { type: 'string', default: process.env.OIDC_JWKS },
    config: { type: 'string', default: process.env.OIDC_CONFIG },
  },
});

if (!args.issuer || !args.jwks) {
  console.error('usage: node provider.mjs --port P --issuer URL --jwks FILE [--config FILE]');
  process.exit(2);
}

const jwks = JSON.parse(readFileSync(args.jwks, 'utf8'));
const config = args.config ? JSON.parse(readFileSync(args.config, 'utf8')) : {};
const resource = config.resource ?? 'urn:urbanos';
const claims = config.claims ?? {};
const clients = config.clients ?? [
  {
    client_id: 'service',
    client_secret: 'service-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
  {
    client_id: 'webapp',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  },
];

const provider = new Provider(args.issuer, {
  clients,
  clientDefaults: { id_token_signed_response_alg: jwks.keys[0].alg },
  jwks,
  cookies: { keys: ['urbanos-test-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'read write',
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: jwks.keys[0].alg } },
        };
      },
    },
  },
  // roles, groups and tenant roles of the client (client credentials) or the logged-in
  // account (authorization code), from the config
  extraTokenClaims: (_ctx, token) => claims[token.accountId ?? token.clientId] ?? undefined,
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  pkce: { required: () => true },
});
provider.proxy = false;

const server = provider.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
