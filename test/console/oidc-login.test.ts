// Auditors sign in to the console at a REAL OpenID provider (oidc-provider, with group claims) in
// a real headless chromium: authorization code + PKCE + nonce, the IdP's own login and consent
// pages, the sealed SameSite=Strict session cookie. Users outside the console group get 403; a
// forged, tampered, expired or logged-out cookie is refused; a callback whose state was not
// issued to this browser (CSRF / login fixation) is refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { consoleOptions, startConsole, type RunningConsole } from '../../gateway/console/server.ts';
import { CookieSealer, SESSION_COOKIE, TX_COOKIE } from '../../gateway/console/oidc-login.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { launchBrowser, type Browser } from '../support/browser.ts';
import { browse, startIdp, type TestIdp } from '../support/oidc-idp.ts';
import { freePort } from '../support/net.ts';

const COOKIE_KEY = 'console-cookie-key-for-tests-0123456789abcdef';
const CLIENT_SECRET = 'console-client-secret-0123456789-0123456789';

describe('console: OIDC sign-in for auditors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-console-oidc-'));
  let idp: TestIdp;
  let store: SqliteStore;
  let loaded: LoadedConfig;
  let con: RunningConsole;
  let base: string;
  let browser: Browser;

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    idp = await startIdp(
      {
        ann: { email: 'ann@example.com', email_verified: true, groups: ['auditors', 'dev'] },
        bob: { email: 'bob@example.com', email_verified: true, groups: ['dev'] },
      },
      [{ client_id: 'airlock-console', client_secret: CLIENT_SECRET, redirect_uris: [`${base}/callback`], token_endpoint_auth_method: 'client_secret_post' }],
    );
    process.env.AIRLOCK_TEST_CONSOLE_COOKIE_KEY = COOKIE_KEY;
    process.env.AIRLOCK_TEST_CONSOLE_CLIENT_SECRET = CLIENT_SECRET;
    process.env.AIRLOCK_TEST_CONSOLE_SIGNING_KEY = 'console-test-signing-key-0123456789';
    loaded = parseConfig(
      `
auth: { signingKey: { env: AIRLOCK_TEST_CONSOLE_SIGNING_KEY } }
store: { sqlite: airlock.db }
console:
  groups: [auditors]
  auth:
    oidc:
      issuer: "${idp.issuer}"
      clientId: airlock-console
      clientSecret: { env: AIRLOCK_TEST_CONSOLE_CLIENT_SECRET }
      redirectUrl: "${base}/callback"
      group: auditors
      scopes: openid email groups
      cookieKey: { env: AIRLOCK_TEST_CONSOLE_COOKIE_KEY }
      sessionTtl: 10m
`,
      join(dir, 'airlock.yaml'),
      dir,
    );
    store = SqliteStore.open(join(dir, 'airlock.db'));
    const at = new Date(Date.now() - 60_000);
    store.startSession({ id: randomUUID(), protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'prod', clientAddress: '127.0.0.1', startedAt: at });
    con = await startConsole(consoleOptions(loaded, store), '127.0.0.1', port);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await con?.close();
    await idp?.close();
    store?.close();
    rmSync(dir, { recursive: true, force: true });
    delete process.env.AIRLOCK_TEST_CONSOLE_COOKIE_KEY;
    delete process.env.AIRLOCK_TEST_CONSOLE_CLIENT_SECRET;
    delete process.env.AIRLOCK_TEST_CONSOLE_SIGNING_KEY;
  });

  /** From the console's login screen through the IdP's login and consent pages. */
  async function signInWithBrowser(account: string): Promise<number | undefined> {
    const { page } = browser;
    await page.goto(base + '/');
    await page.waitForSelector('#oidc-login:not([hidden])');
    await page.click('#oidc-login-link');
    await page.waitForSelector('input[name=login]');
    await page.fill('input[name=login]', account);
    await page.fill('input[name=password]', 'any');
    const back = page.waitForResponse((r) => r.url().startsWith(`${base}/callback`), { timeout: 30_000 });
    await page.click('button[type=submit]');
    // The consent page (first sign-in of this account for this client).
    const consent = await page.waitForSelector('form button[type=submit]', { timeout: 5000 }).catch(() => undefined);
    if (consent && page.url().startsWith(idp.issuer)) await consent.click();
    return (await back).status();
  }

  const cookieHeader = (v: string) => ({ cookie: `${SESSION_COOKIE}=${v}` });

  test('an auditor in the group signs in at the IdP and sees the sessions list; the cookie is HttpOnly and SameSite=Strict', async () => {
    assert.equal(await signInWithBrowser('ann'), 302);
    const { page } = browser;
    await page.waitForSelector('#nav:not([hidden])');
    await page.waitForSelector('#sessions');
    assert.equal(await page.locator('.session-row').count(), 1);
    assert.match((await page.textContent('#who')) ?? '', /ann@example\.com \(auditors, dev\)/);
    const cookies = await browser.context.cookies(base);
    const session = cookies.find((c) => c.name === SESSION_COOKIE);
    assert.ok(session, 'session cookie set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(session.secure, false, 'plain http console (Secure only when redirectUrl is https)');
    assert.ok(session.expires > Date.now() / 1000 && session.expires < Date.now() / 1000 + 11 * 60, 'short-lived');
    assert.equal(cookies.some((c) => c.name === TX_COOKIE && c.value !== ''), false, 'the login transaction cookie is cleared');
    // The session is readable without any token (the cookie alone), and opaque to the holder.
    const res = await fetch(`${base}/api/sessions`, { headers: cookieHeader(session.value) });
    assert.equal(res.status, 200);
    assert.doesNotMatch(Buffer.from(session.value, 'base64url').toString('latin1'), /ann@example|auditors/);
    // The sign-in is remembered in the identity registry (approvers.source: oidc reads it).
    assert.deepEqual(store.findIdpIdentities({ email: 'ann@example.com' }).map((e) => [e.identity, e.groups, e.via]), [['ann@example.com', ['auditors', 'dev'], 'console']]);

    // Log out: the cookie is cleared, and the old value no longer opens the API.
    await page.click('#logout');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal((await browser.context.cookies(base)).some((c) => c.name === SESSION_COOKIE), false);
    const replay = await fetch(`${base}/api/sessions`, { headers: cookieHeader(session.value) });
    assert.equal(replay.status, 401);
    assert.match(((await replay.json()) as { error: string }).error, /logged out/);
  });

  test('a user without the console group gets 403 and no session', async () => {
    await browser.context.clearCookies();
    assert.equal(await signInWithBrowser('bob'), 403);
    assert.match((await browser.page.textContent('#auth-message')) ?? '', /bob@example\.com is not in the group auditors/);
    assert.equal((await browser.context.cookies(base)).some((c) => c.name === SESSION_COOKIE), false);
  });

  test('a forged, tampered, foreign-key or expired session cookie is refused', async () => {
    const forged = await fetch(`${base}/api/sessions`, { headers: cookieHeader('not-a-sealed-value') });
    assert.equal(forged.status, 401);
    const now = Date.now();
    const good = { sid: randomUUID(), iss: idp.issuer, sub: 'ann', name: 'ann@example.com', groups: ['auditors'], exp: now + 60_000 };
    const sealed = new CookieSealer(COOKIE_KEY).seal('session', good);
    assert.equal((await fetch(`${base}/api/me`, { headers: cookieHeader(sealed) })).status, 200, 'control: a genuine value is accepted');
    const bytes = Buffer.from(sealed, 'base64url');
    bytes[20] ^= 1;
    assert.equal((await fetch(`${base}/api/me`, { headers: cookieHeader(bytes.toString('base64url')) })).status, 401, 'one flipped bit');
    const otherKey = new CookieSealer('another-key-another-key-another-key-0000').seal('session', good);
    assert.equal((await fetch(`${base}/api/me`, { headers: cookieHeader(otherKey) })).status, 401, 'sealed with another key');
    const txAsSession = new CookieSealer(COOKIE_KEY).seal('tx', good);
    assert.equal((await fetch(`${base}/api/me`, { headers: cookieHeader(txAsSession) })).status, 401, 'a transaction cookie is not a session');
    const expired = new CookieSealer(COOKIE_KEY).seal('session', { ...good, exp: now - 1000 });
    const res = await fetch(`${base}/api/me`, { headers: cookieHeader(expired) });
    assert.equal(res.status, 401);
    assert.match(((await res.json()) as { error: string }).error, /expired/);
    const dup = await fetch(`${base}/api/me`, { headers: { cookie: `${SESSION_COOKIE}=${sealed}; ${SESSION_COOKIE}=${sealed}` } });
    assert.equal(dup.status, 401, 'two session cookies: trust neither');
  });

  test('CSRF: a callback carrying a state this browser was not given is refused, and no session is set', async () => {
    // The victim's browser started a sign-in (has its own transaction cookie) ...
    const victim = await fetch(`${base}/login`, { redirect: 'manual' });
    assert.equal(victim.status, 302);
    const victimTx = victim.headers.getSetCookie().find((c) => c.startsWith(`${TX_COOKIE}=`))!.split(';')[0];
    assert.match(victim.headers.getSetCookie().join('\n'), /Path=\/callback; Max-Age=600; HttpOnly; SameSite=Lax/);
    // ... the attacker completes a sign-in of their own and stops at the callback URL.
    const attacker = await fetch(`${base}/login`, { redirect: 'manual' });
    const { url } = await browse(attacker.headers.get('location')!, { login: 'ann', password: 'any' }, (u) => u.href.startsWith(`${base}/callback`));
    assert.ok(url.searchParams.get('code') && url.searchParams.get('state'));
    // The victim is made to open it.
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: victimTx } });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /could not be verified/);
    assert.equal(res.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`) && !c.startsWith(`${SESSION_COOKIE}=;`)), false);
    // Without any transaction cookie at all: refused too.
    const none = await fetch(url, { redirect: 'manual' });
    assert.equal(none.status, 400);
    assert.match(await none.text(), /not started here/);
  });
});
