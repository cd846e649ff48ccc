// The OpenID Provider of `bastion demo --oidc-provider` and of the OpenID Connect tests: panva's
// certified `oidc-provider`, configured from a JSON file that bastion/demo/local_provider.py or
// tests/oidc_support.py writes (clients, signing keys, accounts, issuer).
//
//   node provider.mjs <config.json>
//
// It listens on 127.0.0.1 only: on the port the config gives (0: any free port), or on the
// listening socket `fd` it inherited; it writes the port it got to `port_file` once it accepts
// connections. People (the demo) and tests use the provider's own development login and consent
// pages (`devInteractions`); this file adds only what those pages lack: the password of a seeded
// account is checked on the login form (the stock page accepts any login), and an admin endpoint
// registers a client at run time (POST /_admin/clients with the config's admin token as a bearer
// token), so a test can use the exact redirect URI of a server it started.

import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { timingSafeEqual } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import * as querystring from 'node:querystring';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The package lives in a cache folder keyed by the lockfile's digest (tests/node_tools.py,
// bastion/demo/local_provider.py), not beside this file: resolve it from there.
const require = createRequire(`${config.modules}/`);
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const accounts = config.accounts;

function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(String(expected));
  return a.length === b.length && timingSafeEqual(a, b);
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: config.cookie_keys },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // false: the scope's claims (email, email_verified) are in the ID token, as Google's are.
  conformIdTokenClaims: config.conform_id_token_claims,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  ...(config.ttl ? { ttl: config.ttl } : {}),
  async findAccount(ctx, id) {
    const account = Object.hasOwn(accounts, id) ? accounts[id] : undefined;
    if (account === undefined) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account.claims };
      },
    };
  },
});

// The issuer is the tampering proxy's origin (tests/oidc_support.py), which forwards the Host
// header unchanged: the endpoints the provider advertises are the proxy's.

async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) {
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  // The provider's body parser falls back to an already read body.
  ctx.req.body = raw;
  return querystring.parse(raw);
}

function refuse(ctx, status, message) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><title>Refused</title></head>`
    + `<body><h1>Refused</h1><p class="error">${message}</p></body></html>`;
}

provider.use(async (ctx, next) => {
  // The login form of the development pages: the password must be the seeded account's.
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+\/?$/.test(ctx.path)
      && ctx.is('application/x-www-form-urlencoded')) {
    const form = await readForm(ctx);
    if (form.prompt === 'login') {
      const account = Object.hasOwn(accounts, form.login) ? accounts[form.login] : undefined;
      if (account === undefined || !sameSecret(form.password ?? '', account.password)) {
        refuse(ctx, 401, 'invalid login or password');
        return;
      }
    }
    await next();
    return;
  }

  if (ctx.path === '/_admin/clients') {
    if (ctx.method !== 'POST') {
      refuse(ctx, 405, 'POST only');
      return;
    }
    const given = (ctx.get('authorization') || '').replace(/^Bearer /, '');
    if (!sameSecret(given, config.admin_token)) {
      refuse(ctx, 401, 'admin token required');
      return;
    }
    const chunks = [];
    for await (const chunk of ctx.req) {
      chunks.push(chunk);
    }
    let metadata;
    try {
      metadata = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      await provider.Client.validate(metadata);
    } catch (error) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_client_metadata', error_description: String(error.error_description ?? error.message) };
      return;
    }
    if (await provider.Client.find(metadata.client_id)) {
      ctx.status = 409;
      ctx.body = { error: 'client_exists', error_description: metadata.client_id };
      return;
    }
    await provider.Client.adapter.upsert(metadata.client_id, metadata);
    ctx.status = 201;
    ctx.body = metadata;
    return;
  }

  await next();
});

// `fd`: a socket the parent process already bound and listens on (bastion demo), so the issuer
// it names is known before Node starts and no other process can take the port meanwhile.
const server = createServer(provider.callback());
const where = Number.isInteger(config.fd) ? { fd: config.fd } : { port: config.port, host: '127.0.0.1' };
server.listen(where, () => {
  const { port } = server.address();
  const scratch = `${config.port_file}.tmp`;
  writeFileSync(scratch, String(port));
  renameSync(scratch, config.port_file);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// `exit_with_stdin`: the parent (bastion demo) holds the other end of stdin; when it ends, even
// killed, the pipe closes and the provider goes with it instead of holding its port.
if (config.exit_with_stdin) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
