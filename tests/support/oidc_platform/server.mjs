// A stand-in downstream platform for ValetKey's tests: node-oidc-provider as its OAuth server
// (one confidential client, code + PKCE S256, rotating refresh tokens, RFC 7009 revocation)
// and a tiny bearer-protected "CRM" API under /api, on 127.0.0.1 only.
//
// Config: JSON in the OIDC_PLATFORM_CONFIG environment variable:
//   {client_id, client_secret, redirect_uris, access_ttl, ready_file}
// It listens on a port the kernel picks and writes {"port": N} to ready_file once it answers.
//
// Test-only endpoints: GET /_stats, GET /_log, POST /_reset (clears the API log).
// Interaction: GET /interaction/:uid shows one form; POSTing it with login=ACCOUNT signs that
// account in and grants every requested scope (no password, no separate consent page).

import { generateKeyPairSync, randomBytes, webcrypto } from 'node:crypto';
import * as nodeCrypto from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { register } from 'node:module';

// oidc-provider 9 and jose 6 use APIs newer than Node 18 (Debian 12's nodejs package): the
// WebCrypto global, crypto.hash and URL.parse. Shims, so that `apt-get install nodejs` is
// enough; on Node >= 20.18 none of them is used.
if (!globalThis.crypto) {
  globalThis.crypto = webcrypto;
}
if (typeof nodeCrypto.hash !== 'function') {
  register('./node18-compat.mjs', import.meta.url);
}
if (typeof URL.parse !== 'function') {
  URL.parse = (input, base) => {
    try {
      return new URL(input, base);
    } catch {
      return null;
    }
  };
}

const { default: Provider } = await import('oidc-provider');

const config = JSON.parse(process.env.OIDC_PLATFORM_CONFIG ?? '{}');
for (const key of ['client_id', 'client_secret', 'redirect_uris', 'ready_file']) {
  if (config[key] === undefined) {
    throw new Error(`OIDC_PLATFORM_CONFIG.${key} is required`);
  }
}
const accessTtl = Number(config.access_ttl ?? 60);

const stats = {
  code_grants: 0,
  refresh_grants: 0,
  grant_errors: 0,
  reuse_detected: 0,
  grants_revoked: 0,
  revocations: 0,
  api_calls: 0,
  api_rejected: 0,
};
let apiLog = [];

// ---------------------------------------------------------------------------------- helpers

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/html; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ------------------------------------------------------------------------------ interactions

async function showInteraction(req, res, uid) {
  const { prompt, params } = await provider.interactionDetails(req, res);
  send(res, 200, `<!doctype html>
<html><head><title>CRM sign-in</title></head><body>
<h1>Sign in to the CRM (${escapeHtml(prompt.name)})</h1>
<p>${escapeHtml(params.client_id)} asks for: <code>${escapeHtml(params.scope ?? '')}</code></p>
<form method="post" action="/interaction/${escapeHtml(uid)}">
  <input name="login" placeholder="any account id" autofocus>
  <button type="submit">Sign in and allow</button>
</form>
</body></html>`);
}

async function submitInteraction(req, res) {
  const form = new URLSearchParams(await readBody(req));
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  // A login prompt signs in whoever the form names; a consent-only prompt keeps the session's.
  const accountId = prompt.name === 'login' ? form.get('login') : (session?.accountId ?? form.get('login'));
  if (!accountId) {
    send(res, 400, '<p>login is required</p>');
    return;
  }
  // Grant everything that was asked for: the OIDC scopes (openid, offline_access, crm.*),
  // and any claims or resource scopes the consent prompt reports as missing.
  const existing = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  const grant = existing?.accountId === accountId
    ? existing
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) {
    grant.addOIDCScope(params.scope);
  }
  const missing = prompt.details ?? {};
  if (missing.missingOIDCScope) {
    grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  }
  if (missing.missingOIDCClaims) {
    grant.addOIDCClaims(missing.missingOIDCClaims);
  }
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  const result = { consent: { grantId } };
  if (prompt.name === 'login' || session?.accountId !== accountId) {
    result.login = { accountId };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

// ----------------------------------------------------------------------------------- the API

const DEALS = {
  42: { id: '42', name: 'Acme renewal', amount: 120000, currency: 'EUR', stage: 'negotiation' },
  7: { id: '7', name: 'Globex pilot', amount: 18000, currency: 'EUR', stage: 'won' },
};

async function api(req, res, url) {
  const raw = await readBody(req);
  const entry = {
    method: req.method,
    path: url.pathname,
    query: url.search.slice(1),
    headers: Object.fromEntries(
      Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v.join(', ') : v]),
    ),
    body: raw,
    status: 0,
  };
  apiLog.push(entry);
  if (apiLog.length > 500) {
    apiLog = apiLog.slice(-500);
  }

  const reject = (description) => {
    stats.api_rejected += 1;
    entry.status = 401;
    send(res, 401, { error: 'invalid_token', error_description: description }, {
      'www-authenticate': `Bearer realm="crm", error="invalid_token", error_description="${description}"`,
    });
  };
  const match = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
  if (!match) {
    reject('no bearer token');
    return;
  }
  const token = await provider.AccessToken.find(match[1]);
  if (!token) {
    reject('access token unknown, expired or revoked');
    return;
  }
  if (token.clientId !== config.client_id) {
    reject('access token issued to another client');
    return;
  }

  stats.api_calls += 1;
  entry.status = 200;
  let body = null;
  if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      body = raw;
    }
  }
  const answer = { path: url.pathname, method: req.method, sub: token.accountId, scope: token.scope ?? '' };
  const deal = /^\/api\/deals\/([^/]+)$/.exec(url.pathname);
  if (deal && req.method === 'GET') {
    const id = decodeURIComponent(deal[1]);
    Object.assign(answer, DEALS[id] ?? { id, name: `Deal ${id}`, amount: 1000, currency: 'EUR', stage: 'new' });
  } else if (url.pathname === '/api/deals' && req.method === 'GET') {
    answer.deals = Object.values(DEALS);
  }
  if (body !== null) {
    answer.received = body;
  }
  send(res, 200, answer);
}

// ------------------------------------------------------------------------------- the server

const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('unhandled error', err);
    if (!res.headersSent) {
      send(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    } else {
      res.end();
    }
  });
});

let provider;
let oidcCallback;

async function handle(req, res) {
  if (!oidcCallback) {
    send(res, 503, { error: 'starting' });
    return;
  }
  const url = new URL(req.url, provider.issuer);
  const interaction = /^\/interaction\/([^/]+)$/.exec(url.pathname);
  if (url.pathname === '/_stats' && req.method === 'GET') {
    send(res, 200, stats);
  } else if (url.pathname === '/_log' && req.method === 'GET') {
    send(res, 200, apiLog);
  } else if (url.pathname === '/_reset' && req.method === 'POST') {
    apiLog = [];
    send(res, 200, { ok: true });
  } else if (url.pathname === '/api' || url.pathname.startsWith('/api/')) {
    await api(req, res, url);
  } else if (interaction && req.method === 'GET') {
    await showInteraction(req, res, interaction[1]);
  } else if (interaction && req.method === 'POST') {
    await submitInteraction(req, res);
  } else {
    if (url.pathname === '/token/revocation' && req.method === 'POST') {
      res.once('finish', () => { if (res.statusCode === 200) stats.revocations += 1; });
    }
    oidcCallback(req, res);
  }
}

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'platform-1', alg: 'ES256', use: 'sig' };

provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // client_secret_post is accepted too: oidc-provider treats the two as interchangeable.
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [signingKey] },
  // Expiry exactly at access_ttl (the default tolerates 15 s past `exp` everywhere).
  clockTolerance: 0,
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'crm.read', 'crm.write'],
  claims: { openid: ['sub'] },
  responseTypes: ['code'],
  pkce: { required: () => true },
  // Every refresh rotates; presenting a consumed refresh token revokes the whole grant.
  rotateRefreshToken: true,
  // A refresh token for every code exchange, with or without offline_access, that outlives
  // the (cookie) session.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    IdToken: 600,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    Interaction: 600,
    Session: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    // Off, so that a `resource` parameter is ignored and crm.* stay plain scopes of an
    // opaque access token (with it on, each resource needs getResourceServerInfo).
    resourceIndicators: { enabled: false },
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub }),
  }),
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>error</title><pre id="error">${escapeHtml(JSON.stringify(out))}</pre>`;
  },
});

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type === 'authorization_code') stats.code_grants += 1;
  if (type === 'refresh_token') stats.refresh_grants += 1;
});
provider.on('grant.error', (ctx, err) => {
  stats.grant_errors += 1;
  if (err.error_detail === 'refresh token already used') stats.reuse_detected += 1;
  console.error(`grant.error ${err.error}: ${err.error_detail ?? err.error_description}`);
});
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('server_error', (ctx, err) => { console.error('server_error', err); });

oidcCallback = provider.callback();

const ready = config.ready_file;
writeFileSync(`${ready}.tmp`, JSON.stringify({ port, issuer }));
renameSync(`${ready}.tmp`, ready);
console.log(`oidc platform listening on ${issuer} (node ${process.version})`);

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
