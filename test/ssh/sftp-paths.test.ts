// SFTP paths are decided as what the server will act on: absolute, symlinks resolved on the
// server, both paths of a rename or link, FSETSTAT like SETSTAT on its handle's path. With the
// real OpenSSH sftp client (and ssh2's, which sends relative paths) through the gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import ssh2 from 'ssh2';
import { giveToUser } from '../support/sshd.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;
let work: string;
let vault: string;
let stamps: string;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'airlock-sftp-'));
  vault = join(work, 'vault');
  stamps = join(work, 'stamps');
  mkdirSync(vault);
  mkdirSync(stamps);
  writeFileSync(join(vault, 'secret.txt'), 'the secret\n');
  const esc = (p: string) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  h = await startSshHarness({
    default: 'allow',
    rules: [
      { name: 'vault', match: { protocols: ['ssh'], kinds: ['sftp'], text: [`^sftp \\S+ ${esc(vault)}(/|$)`] }, action: 'deny', reason: 'the vault is off limits' },
      { name: 'no-mode-changes', match: { protocols: ['ssh'], kinds: ['sftp'], text: [`^sftp setstat ${esc(stamps)}/`] }, action: 'deny', reason: 'modes are managed' },
    ],
  });
  chmodSync(work, 0o755);
  giveToUser(h.sshd, work);
});

after(async () => {
  await h?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const auth = async () => ({ keyPath: h.aliceKeyPath });

test('a symlink the agent created cannot point a permitted path into a denied one', async () => {
  const link = join(work, 'innocent');
  const ln = await h.ssh('alice+box', `ln -s ${join(vault, 'secret.txt')} ${link}`, { auth: await auth() });
  assert.equal(ln.code, 0, ln.stderr);
  const out = join(work, 'got.txt');
  const r = await h.sftp('alice+box', [`get ${link} ${out}`], { auth: await auth() });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /vault/);
  assert.equal(existsSync(out), false);
  // A directory link too.
  const dirLink = join(work, 'innocent-dir');
  await h.ssh('alice+box', `ln -s ${vault} ${dirLink}`, { auth: await auth() });
  const d = await h.sftp('alice+box', [`get ${dirLink}/secret.txt ${out}`], { auth: await auth() });
  assert.notEqual(d.code, 0);
  assert.equal(existsSync(out), false);
});

test('rename and symlink check both paths', async () => {
  const src = join(work, 'movable.txt');
  writeFileSync(src, 'x');
  giveToUser(h.sshd, src);
  const r = await h.sftp('alice+box', [`rename ${src} ${join(vault, 'planted.txt')}`], { auth: await auth() });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /vault/);
  assert.equal(existsSync(join(vault, 'planted.txt')), false);
  assert.ok(existsSync(src));
  const l = await h.sftp('alice+box', [`ln -s ${join(vault, 'secret.txt')} ${join(work, 'sftp-link')}`], { auth: await auth() });
  assert.notEqual(l.code, 0);
  assert.equal(existsSync(join(work, 'sftp-link')), false);
});

test('FSETSTAT on an open handle is decided like SETSTAT on its path', async () => {
  const local = join(work, 'local-mode.txt');
  writeFileSync(local, 'mode\n');
  utimesSync(local, 1_000_000_000, 1_000_000_000);
  const remote = join(stamps, 'uploaded.txt');
  // put -p preserves the times with FSETSTAT on the open handle.
  const r = await h.sftp('alice+box', [`-put -p ${local} ${remote}`], { auth: await auth() });
  assert.match(r.stderr, /modes are managed/, r.stderr);
  assert.equal(readFileSync(remote, 'utf8'), 'mode\n', 'the upload itself is allowed');
  assert.notEqual(Math.round(statSync(remote).mtimeMs / 1000), 1_000_000_000, 'the times were not changed');
});

test('a relative path sent before REALPATH "." is resolved against the home directory before the decision', async () => {
  // The test user's home; a vault-like directory inside it, protected by absolute path.
  const home = (await h.ssh('alice+box', 'pwd', { auth: await auth() })).stdout.toString().trim();
  assert.ok(home.startsWith('/'), home);
  const c = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    c.on('ready', () => resolve()).on('error', reject);
    c.connect({ host: '127.0.0.1', port: h.gateway.port, username: 'alice+box', privateKey: readFileSync(h.aliceKeyPath), hostVerifier: () => true });
  });
  try {
    const sftp = await new Promise<ssh2.SFTPWrapper>((res, rej) => c.sftp((e, s) => (e ? rej(e) : res(s))));
    // ../ from home up to the vault, relative.
    const rel = join('.', ...home.split('/').filter(Boolean).map(() => '..'), vault.slice(1), 'secret.txt');
    const err = await new Promise<Error | undefined>((res) => sftp.open(rel, 'r', (e) => res(e ?? undefined)));
    assert.ok(err, `opening ${rel} must be refused`);
    assert.match(err.message, /vault/);
    assert.equal(basename(rel), 'secret.txt');
  } finally {
    c.end();
  }
});
