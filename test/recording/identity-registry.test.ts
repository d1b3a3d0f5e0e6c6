// The identity registry (who the IdP last vouched for), specified once and run against both audit
// store backends: SQLite and a real PostgreSQL. The registry lives beside the chain, so recording
// people in it leaves the chain verifying.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import type { IdpIdentity } from '../../gateway/recording/identity-registry.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { backends, postgresBackend, type AnyStore } from './backends.ts';

after(() => postgresBackend.stop());

function entry(over: Partial<IdpIdentity> = {}): IdpIdentity {
  return { issuer: 'https://idp.example', subject: 'u-1', identity: 'alice@example.com', email: 'Alice@Example.com', emailVerified: true, groups: ['dba'], verifiedAt: new Date(Date.UTC(2026, 11, 1, 9)), via: 'login', ...over };
}

for (const backend of backends) {
  describe(`identity registry (${backend.name})`, () => {
    async function fresh(t: { after(fn: () => unknown): void }): Promise<AnyStore> {
      const loc = await backend.location();
      const store = loc.open();
      t.after(async () => {
        store.close();
        await loc.dispose();
      });
      return store;
    }

    test('an entry is found by email (case-insensitive) and by identity, with its groups and time', async (t) => {
      const store = await fresh(t);
      store.recordIdpIdentity(entry());
      const [byEmail] = store.findIdpIdentities({ email: ' ALICE@example.COM ' });
      assert.deepEqual(byEmail, { ...entry(), email: 'alice@example.com' });
      assert.deepEqual(store.findIdpIdentities({ identity: 'alice@example.com' }), [byEmail]);
      assert.deepEqual(store.findIdpIdentities({ email: 'bob@example.com' }), []);
      assert.deepEqual(store.findIdpIdentities({ email: '' }), [], 'no email matches nobody');
    });

    test('a newer sign-in refreshes the entry; an older assertion never overwrites a newer one', async (t) => {
      const store = await fresh(t);
      store.recordIdpIdentity(entry());
      store.recordIdpIdentity(entry({ groups: ['dev'], verifiedAt: new Date(Date.UTC(2026, 11, 1, 10)) }));
      store.recordIdpIdentity(entry({ groups: ['dba', 'admins'], verifiedAt: new Date(Date.UTC(2026, 11, 1, 8)) }));
      const all = store.findIdpIdentities({ identity: 'alice@example.com' });
      assert.equal(all.length, 1, 'one entry per (issuer, subject)');
      assert.deepEqual(all[0].groups, ['dev']);
      // Another issuer's entry for the same email is its own entry; newest first.
      store.recordIdpIdentity(entry({ issuer: 'https://other.example', emailVerified: false, verifiedAt: new Date(Date.UTC(2026, 11, 1, 11)) }));
      assert.deepEqual(store.findIdpIdentities({ email: 'alice@example.com' }).map((e) => [e.issuer, e.emailVerified]), [['https://other.example', false], ['https://idp.example', true]]);
    });

    test('each registration is a chained audit event; the chain keeps verifying', async (t) => {
      const store = await fresh(t);
      store.recordAudit({ at: new Date(), kind: 'approval.posted', subject: 'r-1', detail: {} });
      store.recordIdpIdentity(entry());
      const [ev] = store.listAudit('alice@example.com');
      assert.equal(ev.kind, 'identity.registered');
      assert.deepEqual(ev.detail.groups, ['dba']);
      assert.equal(ev.detail.issuer, 'https://idp.example');
      assert.equal(store.verify().ok, true);
    });
  });
}

test('a read-only SQLite store refuses to register (the auditor console opens it so)', async () => {
  const loc = await backends[0].location();
  const rw = loc.open();
  rw.close();
  const ro = SqliteStore.open((rw as SqliteStore).path, { readonly: true });
  try {
    assert.throws(() => ro.recordIdpIdentity(entry()), /read-only: cannot register identities/);
    assert.deepEqual(ro.findIdpIdentities({ email: 'alice@example.com' }), []);
  } finally {
    ro.close();
    await loc.dispose();
  }
});
