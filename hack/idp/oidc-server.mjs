// A real OpenID provider for the tests: panva/oidc-provider (OpenID Certified), configured
// from a JSON file and served over plain HTTP on 127.0.0.1.
//
//   node oidc-server.mjs --config FILE [--port N]
//   OIDC_SERVER_CONFIG='{"port": 0, ...}' node oidc-server.mjs
//
// When it listens, it prints exactly one JSON line on stdout and nothing else there:
//   {"ready": true, "issuer": "http://127.0.0.1:PORT", "port": PORT,
//    "token_endpoint": "...", "jwks_uri": "...", "pid": PID}
// Everything else (warnings, one line per token endpoint error) goes to stderr.
// SIGTERM/SIGINT close the listener and exit 0.
//
// Configuration (every key optional):
//   host                 "127.0.0.1"    the only address it binds
//   port                 0              0 picks a free port (read it from the ready line)
//   ttl                  seconds per artifact: ClientCredentials (client_credentials access
//                        tokens), AccessToken (password/refresh_token access tokens),
//                        IdToken, RefreshToken, Grant
//   accessTokenFormat    "jwt"          "jwt" (RFC 9068 JWT access tokens, audience =
//                                       resource) or "opaque"
//   resource             "urn:token-refresher:test-api"  default resource indicator
//                        (RFC 8707): every access token is issued for it unless the request
//                        names another one from `resources`
//   resources            {uri: "scope list"}  resource servers beyond the default one
//   resourceScopes       "api:read api:write"  scopes of the default resource
//   rotateRefreshToken   true           a new refresh token on every refresh; the old one
//                                       is then consumed, and presenting it again revokes
//                                       the whole grant (replay detection)
//   clients              oidc-provider client metadata (client_id, client_secret,
//                        token_endpoint_auth_method, grant_types, jwks, ...)
//   users                [{"username", "password"}] for the test-only password grant below
//   trustedIssuers       [{"issuer", "jwks"}] whose JWTs the jwt-bearer grant accepts
//   stateDir             directory for signing keys and tokens, so that a restart on the
//                        same port keeps the issuer's keys and the issued refresh tokens
//                        (an outage, not a new IdP). Without it both live in memory.
//
// Two grants are added here; everything else is oidc-provider's own, unmodified:
// - "password" (RFC 6749 section 4.3), test-only: oidc-provider deliberately has none, and
//   tests need refresh tokens without a browser. It issues the same Grant, AccessToken and
//   RefreshToken artifacts as the authorization code flow would, so the refresh_token
//   grant that follows (rotation, replay detection) is oidc-provider's.
// - "urn:ietf:params:oauth:grant-type:jwt-bearer" (RFC 7523 section 2.1): a JWT of a
//   trusted issuer (a Kubernetes service-account token) as the grant.
// Clients use them by listing them in grant_types.

import { createHash, randomBytes, generateKeyPairSync, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';

const DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  ttl: {
    AccessToken: 60,
    ClientCredentials: 60,
    IdToken: 60,
    RefreshToken: 24 * 60 * 60,
    Grant: 24 * 60 * 60,
  },
  accessTokenFormat: 'jwt',
  resource: 'urn:token-refresher:test-api',
  resourceScopes: 'api:read api:write',
  resources: {},
  rotateRefreshToken: true,
  clients: [],
  users: [],
  trustedIssuers: [],
  stateDir: null,
};

function loadConfig() {
  const { values } = parseArgs({
    options: { config: { type: 'string' }, port: { type: 'string' } },
  });
  let text = process.env.OIDC_SERVER_CONFIG;
  if (values.config) text = readFileSync(values.config, 'utf8');
  const given = text ? JSON.parse(text) : {};
  const config = { ...DEFAULTS, ...given, ttl: { ...DEFAULTS.ttl, ...given.ttl } };
  if (values.port !== undefined) config.port = Number(values.port);
  if (!['jwt', 'opaque'].includes(config.accessTokenFormat)) {
    throw new Error(`accessTokenFormat must be "jwt" or "opaque", not ${JSON.stringify(config.accessTokenFormat)}`);
  }
  return config;
}

// --- state that may outlive the process ---------------------------------------------------

function writeJson(path, value) {
  writeFileSync(`${path}.tmp`, JSON.stringify(value));
  renameSync(`${path}.tmp`, path);
}

// stateDir/jwks.json if it exists (tests/idp.py writes one), else a new RSA key.
function signingKeys(stateDir) {
  const path = stateDir && join(stateDir, 'jwks.json');
  if (path && existsSync(path)) return JSON.parse(readFileSync(path, 'utf8'));
  const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const jwks = { keys: [{ ...jwk, kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' }] };
  if (path) writeJson(path, jwks);
  return jwks;
}

// A plain Map of every stored artifact, written through to stateDir/store.json when set.
// Small on purpose: a test IdP holds a few dozen tokens.
function storeAdapter(stateDir) {
  const path = stateDir && join(stateDir, 'store.json');
  const entries = new Map(path && existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : []);
  const now = () => Date.now();
  const persist = () => {
    for (const [key, { expiresAt }] of entries) if (expiresAt && expiresAt <= now()) entries.delete(key);
    if (path) writeJson(path, [...entries]);
  };
  const get = (key) => {
    const entry = entries.get(key);
    if (!entry || (entry.expiresAt && entry.expiresAt <= now())) return undefined;
    return entry;
  };

  return class Adapter {
    constructor(model) { this.model = model; }

    key(id) { return `${this.model}:${id}`; }

    async upsert(id, payload, expiresIn) {
      entries.set(this.key(id), { payload, expiresAt: expiresIn ? now() + expiresIn * 1000 : null });
      persist();
    }

    async find(id) { return get(this.key(id))?.payload; }

    async findByUid(uid) {
      for (const [key, entry] of entries) {
        if (key.startsWith(`${this.model}:`) && entry.payload.uid === uid) return get(key)?.payload;
      }
      return undefined;
    }

    async findByUserCode(userCode) {
      for (const [key, entry] of entries) {
        if (key.startsWith(`${this.model}:`) && entry.payload.userCode === userCode) return get(key)?.payload;
      }
      return undefined;
    }

    async consume(id) {
      const entry = get(this.key(id));
      if (entry) entry.payload.consumed = Math.floor(now() / 1000);
      persist();
    }

    async destroy(id) {
      entries.delete(this.key(id));
      persist();
    }

    async revokeByGrantId(grantId) {
      for (const [key, entry] of entries) if (entry.payload.grantId === grantId) entries.delete(key);
      persist();
    }
  };
}

// --- grants oidc-provider does not ship ----------------------------------------------------

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

function accessTokenShape(config, resource) {
  // RFC 9068 access tokens are JWTs whose audience is the resource server.
  return config.accessTokenFormat === 'jwt'
    ? { audience: resource, accessTokenFormat: 'jwt' }
    : { accessTokenFormat: 'opaque' };
}

// Issue what the authorization code flow would have issued for `accountId`: a Grant, an
// access token for the resource, and (with offline_access, if the client may refresh) a
// refresh token that oidc-provider's own refresh_token grant then serves.
async function issueForAccount(provider, config, resourceScopes, ctx, { accountId, gty, refresh }) {
  const { client, params } = ctx.oidc;
  const requested = new Set((params.scope || 'openid').split(' ').filter(Boolean));
  const resource = params.resource || config.resource || undefined;
  const apiScopes = resource ? resourceScopes(resource) : new Set();
  const oidcScopes = [...requested].filter((s) => !apiScopes.has(s));
  const grantedApiScopes = [...requested].filter((s) => apiScopes.has(s));

  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  grant.addOIDCScope(oidcScopes.join(' '));
  if (resource) grant.addResourceScope(resource, grantedApiScopes.join(' '));
  const grantId = await grant.save();

  const at = new provider.AccessToken({ accountId, client, grantId, gty, expiresWithSession: false });
  if (resource) {
    const info = { scope: [...apiScopes].join(' '), ...accessTokenShape(config, resource) };
    at.resourceServer = new provider.ResourceServer(resource, info);
    at.scope = grantedApiScopes.join(' ') || undefined;
  } else {
    at.scope = oidcScopes.join(' ');
  }
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken;
  if (refresh && requested.has('offline_access') && client.grantTypeAllowed('refresh_token')) {
    const rt = new provider.RefreshToken({
      accountId,
      client,
      grantId,
      gty,
      expiresWithSession: false,
      resource,
      rotations: 0,
      scope: [...requested].join(' '),
    });
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }

  let idToken;
  if (requested.has('openid')) {
    const token = new provider.IdToken({ sub: accountId }, { ctx });
    token.scope = 'openid';
    idToken = await token.issue({ use: 'idtoken' });
  }

  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    token_type: 'Bearer',
    scope: at.scope || undefined,
    refresh_token: refreshToken,
    id_token: idToken,
  };
}

// RFC 6749 section 4.3, for tests only: a refresh token without a browser.
function passwordGrant(provider, config, resourceScopes) {
  return async function passwordGrantHandler(ctx) {
    const { username, password } = ctx.oidc.params;
    if (!username || !password) {
      throw new errors.InvalidRequest('username and password are required');
    }
    const user = config.users.find((u) => u.username === username);
    if (!user || !safeEqual(user.password, password)) {
      throw new errors.InvalidGrant('invalid username or password');
    }
    await issueForAccount(provider, config, resourceScopes, ctx, {
      accountId: username, gty: 'password', refresh: true,
    });
  };
}

// RFC 7523 section 2.1: a JWT from a trusted issuer (say, a Kubernetes service-account
// token) as the authorization grant. Its `sub` becomes the access token's subject; its
// `aud` must name this issuer or its token endpoint. No refresh token: the client presents
// a fresh assertion instead.
function jwtBearerGrant(provider, config, resourceScopes) {
  const trusted = new Map(config.trustedIssuers.map((t) => [t.issuer, createLocalJWKSet(t.jwks)]));
  return async function jwtBearerGrantHandler(ctx) {
    const { assertion } = ctx.oidc.params;
    if (!assertion) throw new errors.InvalidRequest('assertion is required');
    let iss;
    try {
      ({ iss } = decodeJwt(assertion));
    } catch {
      throw new errors.InvalidGrant('assertion is not a JWT');
    }
    if (!trusted.has(iss)) throw new errors.InvalidGrant(`assertion issuer ${iss} is not trusted`);
    let payload;
    try {
      ({ payload } = await jwtVerify(assertion, trusted.get(iss), {
        issuer: iss,
        audience: [provider.issuer, `${provider.issuer}/token`],
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      throw new errors.InvalidGrant(`assertion rejected: ${err.message}`);
    }
    await issueForAccount(provider, config, resourceScopes, ctx, {
      accountId: payload.sub, gty: 'jwt-bearer', refresh: false,
    });
  };
}

// --- the server ----------------------------------------------------------------------------

function log(fields) {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`);
}

async function main() {
  const config = loadConfig();
  if (config.stateDir) mkdirSync(config.stateDir, { recursive: true });

  const resourceScopeTable = { [config.resource]: config.resourceScopes, ...config.resources };
  const resourceScopes = (resource) => new Set((resourceScopeTable[resource] ?? '').split(' ').filter(Boolean));

  // Listen first: with port 0 the issuer URL is only known once the kernel picked a port.
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const { port } = server.address();
  const issuer = `http://${config.host}:${port}`;

  const users = new Map(config.users.map((u) => [u.username, u]));
  const provider = new Provider(issuer, {
    adapter: storeAdapter(config.stateDir),
    jwks: signingKeys(config.stateDir),
    clients: config.clients,
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount: async (_ctx, sub) => (users.has(sub)
      ? { accountId: sub, claims: async () => ({ sub }) }
      : undefined),
    scopes: ['openid', 'offline_access'],
    ttl: config.ttl,
    rotateRefreshToken: config.rotateRefreshToken,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? config.resource ?? undefined,
        // Refreshing keeps the resource the grant was for, even with scope "openid".
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (!(resource in resourceScopeTable)) throw new errors.InvalidTarget();
          return { scope: [...resourceScopes(resource)].join(' '), ...accessTokenShape(config, resource) };
        },
      },
    },
  });

  provider.registerGrantType(
    'password',
    passwordGrant(provider, config, resourceScopes),
    new Set(['username', 'password', 'scope', 'resource']),
  );
  provider.registerGrantType(
    'urn:ietf:params:oauth:grant-type:jwt-bearer',
    jwtBearerGrant(provider, config, resourceScopes),
    new Set(['assertion', 'scope', 'resource']),
  );

  // A presented refresh token is logged as a short hash, so tests can count how often the
  // IdP saw each one (a replay is the same hash twice) without the token in any log.
  const presented = (ctx) => {
    const token = ctx?.oidc?.params?.refresh_token;
    return token ? createHash('sha256').update(String(token)).digest('hex').slice(0, 16) : undefined;
  };

  // One line per failed token request, so a test failure shows why (never the token itself).
  for (const event of ['grant.error', 'server_error']) {
    provider.on(event, (ctx, err) => log({
      event,
      client_id: ctx?.oidc?.client?.clientId ?? ctx?.oidc?.params?.client_id,
      grant_type: ctx?.oidc?.params?.grant_type,
      refresh_token_sha256: presented(ctx),
      error: err.error ?? err.name,
      error_description: err.error_description ?? err.message,
      error_detail: err.error_detail,
    }));
  }
  provider.on('grant.success', (ctx) => log({
    event: 'grant.success',
    client_id: ctx.oidc.client?.clientId,
    grant_type: ctx.oidc.params.grant_type,
    refresh_token_sha256: presented(ctx),
  }));
  // Replay detection revoking a whole token family (oidc-provider's helpers/revoke.js).
  provider.on('grant.revoked', (ctx, grantId) => log({
    event: 'grant.revoked', client_id: ctx?.oidc?.client?.clientId, grant_id: grantId,
  }));

  server.on('request', provider.callback());

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  process.stdout.write(`${JSON.stringify({
    ready: true,
    issuer,
    port,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    pid: process.pid,
  })}\n`);
}

main().catch((err) => {
  process.stderr.write(`oidc-server: ${err.stack ?? err}\n`);
  process.exit(1);
});
