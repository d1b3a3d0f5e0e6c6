// Which registry entry makes a chat account an approver (approvers.source: oidc), over the real
// SQLite store: only verified, fresh entries count; an email vouched for as two identities at once
// counts for nobody; an unverified sign-in cannot push out a verified one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../gateway/config/load.ts';
import type { IdpIdentity } from '../../gateway/recording/identity-registry.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { idpApproverByEmail, idpApproverByIdentity } from '../../workflows/idp-approvers.ts';

const config = parseConfig(`
auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
approvers: { source: oidc, maxAge: 1h }
`).config;

function entry(over: Partial<IdpIdentity>): IdpIdentity {
  return { issuer: 'https://idp.example', subject: 'u-1', identity: 'alice', email: 'alice@example.com', emailVerified: true, groups: ['dba'], verifiedAt: new Date(), via: 'login', ...over };
}

function withStore(fn: (s: SqliteStore) => void): void {
  const s = SqliteStore.open(':memory:');
  try {
    fn(s);
  } finally {
    s.close();
  }
}

test('the newest verified, fresh entry counts, with its groups', () =>
  withStore((s) => {
    s.recordIdpIdentity(entry({ verifiedAt: new Date(Date.now() - 30 * 60_000), groups: ['dev'] }));
    s.recordIdpIdentity(entry({ issuer: 'https://other.example', verifiedAt: new Date(Date.now() - 60_000), groups: ['dba'] }));
    const who = idpApproverByEmail(config, s, 'ALICE@example.com');
    assert.deepEqual(who.ok && [who.identity, who.groups], ['alice', ['dba']]);
    assert.deepEqual(idpApproverByIdentity(config, s, 'alice').ok, true);
  }));

test('a newer unverified sign-in claiming the same email does not displace the verified one', () =>
  withStore((s) => {
    s.recordIdpIdentity(entry({ verifiedAt: new Date(Date.now() - 60_000) }));
    s.recordIdpIdentity(entry({ issuer: 'https://other.example', subject: 'x', identity: 'mallory', emailVerified: false, groups: ['admins'] }));
    const who = idpApproverByEmail(config, s, 'alice@example.com');
    assert.deepEqual(who.ok && [who.identity, who.groups], ['alice', ['dba']]);
  }));

test('one email vouched for as two identities at once is refused as ambiguous', () =>
  withStore((s) => {
    s.recordIdpIdentity(entry({}));
    s.recordIdpIdentity(entry({ issuer: 'https://other.example', subject: 'x', identity: 'alice-admin' }));
    const who = idpApproverByEmail(config, s, 'alice@example.com');
    assert.equal(who.ok, false);
    assert.match(!who.ok ? who.error : '', /signed in as several identities \(alice(-admin)?, alice(-admin)?\)/);
  }));

test('stale, unverified, unknown and no registry are each refused with the reason', () =>
  withStore((s) => {
    s.recordIdpIdentity(entry({ verifiedAt: new Date(Date.now() - 2 * 3600_000) }));
    s.recordIdpIdentity(entry({ subject: 'u-2', identity: 'bob', email: 'bob@example.com', emailVerified: false }));
    const err = (r: ReturnType<typeof idpApproverByEmail>) => (r.ok ? '' : r.error);
    assert.match(err(idpApproverByEmail(config, s, 'alice@example.com')), /older than approvers\.maxAge \(1h\)/);
    assert.match(err(idpApproverByEmail(config, s, 'bob@example.com')), /has not verified the email/);
    assert.match(err(idpApproverByEmail(config, s, 'carol@example.com')), /no sign-in at the identity provider is known/);
    assert.match(err(idpApproverByEmail(config, s, '  ')), /no email/);
    assert.match(err(idpApproverByEmail(config, undefined, 'alice@example.com')), /no identity registry/);
    assert.match(err(idpApproverByIdentity(config, s, 'alice')), /older than approvers\.maxAge/);
  }));
