// Revocation through the enforcement seam, with real PostgreSQL behind the gateway: `airlock revoke`
// (another process writing the shared revocation table) ends the live sessions of that identity or
// token with 57P01 and the reason within the poll interval, and refuses new logins; other identities
// and other tokens are untouched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type pg from 'pg';
import { decodeJwt } from 'jose';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { closeAuthState, openAuthState } from '../../gateway/auth/settings.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;
let h: GatewayHarness;

before(async () => {
  h = await startGateway({ config: () => ({ auth: { signingKey: { file: 'signing.key' }, revocationPoll: '500ms' } }) });
  openAuthState(h.loaded);
});
after(async () => {
  closeAuthState(h.loaded);
  await h?.close();
});

function ended(c: pg.Client): Promise<{ code?: string; message: string }> {
  return new Promise((resolve) => c.on('error', (e: Error & { code?: string }) => resolve({ code: e.code, message: e.message })));
}

async function airlock(...args: string[]) {
  return run(process.execPath, [bin, ...args, '-c', h.loaded.file]);
}

test('revoking an identity ends its live session with 57P01 and the reason, and refuses new logins; others keep working', async () => {
  const agent = await h.client({ user: 'agent-1' });
  const alice = await h.client({ user: 'alice' });
  await agent.query('select 1');
  const gone = ended(agent);
  await airlock('revoke', '--identity', 'agent-1', '--reason', 'INC-7 runaway agent', '--by', 'carol');
  const e = await Promise.race([gone, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('session not ended within 5 s')), 5000))]);
  assert.equal(e.code, '57P01');
  assert.match(e.message, /access of agent-1 was revoked by carol: INC-7 runaway agent/);
  await assert.rejects(h.client({ user: 'agent-1' }), (err: Error & { code?: string }) => err.code === '28P01' && /revoked by carol: INC-7/.test(err.message));
  assert.equal((await alice.query('select 2 as n')).rows[0].n, 2);
  const listed = await airlock('revocations');
  assert.match(listed.stdout, /identity\tagent-1\t.*\tcarol\tINC-7 runaway agent/);
  await airlock('unrevoke', '--identity', 'agent-1');
  await new Promise((r) => setTimeout(r, 1200));
  const again = await h.client({ user: 'agent-1' });
  assert.equal((await again.query('select 3 as n')).rows[0].n, 3);
  await again.end();
  await alice.end();
});

test('revoking a token id ends only the sessions of that token', async () => {
  const t1 = await h.token('alice');
  const t2 = await h.token('alice');
  const c1 = await h.client({ user: 'alice', token: t1 });
  const c2 = await h.client({ user: 'alice', token: t2 });
  const gone = ended(c1);
  await airlock('revoke', '--token', String(decodeJwt(t1).jti), '--reason', 'token leaked in a log');
  const e = await Promise.race([gone, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('session not ended within 5 s')), 5000))]);
  assert.equal(e.code, '57P01');
  assert.match(e.message, /token leaked in a log/);
  assert.equal((await c2.query('select 4 as n')).rows[0].n, 4);
  await assert.rejects(h.client({ user: 'alice', token: t1 }), /revoked/);
  await c2.end();
});
