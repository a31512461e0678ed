// A real OpenID Connect provider (panva's certified `oidc-provider`) for Tsuzuku's tests.
//
// Usage:
//   node provider.mjs [--port N] [--config JSON] [--exit-with-stdin]
//
// The port may also come from OIDC_PORT, the configuration from OIDC_CONFIG (JSON). Port 0 (the
// default) lets the kernel pick a free port; the issuer is always http://127.0.0.1:<port>.
// When the provider listens it prints exactly one line to stdout:
//   READY http://127.0.0.1:<port>
//
// Configuration (every key optional):
//   {
//     "clients": [{ "client_id": "...", "client_secret": "...", "redirect_uris": ["..."] }],
//     "groups_in_id_token": true,   // false: groups only from the userinfo endpoint
//     "accounts": { "alice": { "email": "...", "name": "...", "groups": ["..."] } }
//   }
// A single client may instead be given by OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and
// OIDC_REDIRECT_URIS (comma-separated).
//
// Logins go through oidc-provider's development interactions (devInteractions): a plain HTML
// form at /interaction/<uid> where the login name picks the account and any password is accepted
// (the session gets amr ["pwd"]), followed by a consent form. Only accounts listed in the
// configuration exist; logging in as any other name ends the flow with error=access_denied at the
// client's redirect URI. Never expose this provider outside tests.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const DEFAULT_ACCOUNTS = {
  alice: {
    email: 'alice@example.test',
    name: 'Alice Example',
    groups: ['sales', 'staff'],
  },
  bob: {
    email: 'bob@example.test',
    name: 'Bob Example',
    groups: ['engineering'],
  },
};

const DEFAULT_CLIENT = {
  client_id: 'tsuzuku',
  client_secret: 'tsuzuku-test-secret',
  redirect_uris: ['https://auth.localhost:8443/.tsuzuku/oidc/callback'],
};

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function readConfig() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      config: { type: 'string' },
      'exit-with-stdin': { type: 'boolean' },
    },
    strict: true,
  });

  const portText = values.port ?? process.env.OIDC_PORT ?? '0';
  const port = Number.parseInt(portText, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail(`port must be an integer in 0..65535, got ${JSON.stringify(portText)}`);
  }

  const configText = values.config ?? process.env.OIDC_CONFIG ?? '{}';
  let config;
  try {
    config = JSON.parse(configText);
  } catch (err) {
    fail(`configuration is not valid JSON (${err.message}): ${configText}`);
  }

  let clients = config.clients;
  if (!clients && process.env.OIDC_CLIENT_ID) {
    clients = [{
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET ?? DEFAULT_CLIENT.client_secret,
      redirect_uris: (process.env.OIDC_REDIRECT_URIS ?? DEFAULT_CLIENT.redirect_uris.join(','))
        .split(',')
        .map((uri) => uri.trim())
        .filter(Boolean),
    }];
  }
  clients ??= [DEFAULT_CLIENT];

  return {
    port,
    exitWithStdin: values['exit-with-stdin'] ?? false,
    clients: clients.map((client) => ({
      client_id: client.client_id,
      ...(client.client_secret ? { client_secret: client.client_secret } : {}),
      redirect_uris: client.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: client.client_secret ? 'client_secret_basic' : 'none',
      // ID tokens always carry auth_time, which the gateway uses for session freshness.
      require_auth_time: true,
    })),
    groupsInIdToken: config.groups_in_id_token ?? true,
    accounts: config.accounts ?? DEFAULT_ACCOUNTS,
  };
}

const settings = readConfig();

// A fresh signing key for every run: tests must fetch the JWKS, never pin a key.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const LOGIN_SUBMIT = /^\/interaction\/[^/]+$/;

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) {
      throw new Error('request body too large');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// The login step of devInteractions accepts any name and then fails with a server error when
// findAccount does not know it. Handle the login form here instead: a known account signs in
// with amr ["pwd"], an unknown one ends the flow with error=access_denied at the client's
// redirect URI, as a real provider's failed login would. Everything else (the consent form
// included) goes to oidc-provider untouched.
async function handle(provider, callback, req, res) {
  const path = new URL(req.url, 'http://internal').pathname;
  if (req.method !== 'POST' || !LOGIN_SUBMIT.test(path)) {
    callback(req, res);
    return;
  }
  const body = await readBody(req);
  const form = new URLSearchParams(body.toString('utf8'));
  if (form.get('prompt') !== 'login') {
    // Already read: oidc-provider's body parser falls back to req.body.
    req.body = body;
    callback(req, res);
    return;
  }
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name !== 'login') {
    res.statusCode = 400;
    res.end(`expected the login prompt, the interaction is at ${details.prompt.name}`);
    return;
  }
  const login = form.get('login') ?? '';
  const result = Object.hasOwn(settings.accounts, login)
    ? { login: { accountId: login, amr: ['pwd'] } }
    : { error: 'access_denied', error_description: `unknown test account ${JSON.stringify(login)}` };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const server = createServer();
server.listen(settings.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: settings.clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      acr: null,
      auth_time: null,
      iss: null,
      sid: null,
      // amr is set by the login step (see handle below); listing it under openid releases it
      // in every ID token.
      openid: ['sub', 'amr'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    // true: the ID token carries only sub and the like when an access token for userinfo is
    // issued; false: it also carries every granted claim (groups included).
    conformIdTokenClaims: !settings.groupsInIdToken,
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    async findAccount(_ctx, id) {
      const account = Object.hasOwn(settings.accounts, id) ? settings.accounts[id] : undefined;
      if (!account) {
        return undefined;
      }
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: account.preferred_username ?? id,
            email: account.email,
            email_verified: account.email !== undefined,
            name: account.name,
            groups: account.groups ?? [],
          };
        },
      };
    },
  });

  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`provider.mjs: server_error: ${err.stack ?? err}\n`);
  });

  const callback = provider.callback();
  server.on('request', (req, res) => {
    handle(provider, callback, req, res).catch((err) => {
      process.stderr.write(`provider.mjs: request failed: ${err.stack ?? err}\n`);
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end('test provider error');
      }
    });
  });
  process.stdout.write(`READY ${issuer}\n`);
});

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${settings.port}: ${err.message}`));

// A test harness that dies without killing us closes our stdin: leave with it instead of
// lingering as an orphan.
if (settings.exitWithStdin) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
