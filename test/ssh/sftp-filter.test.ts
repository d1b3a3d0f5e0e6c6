// The SFTP filter at the packet level: path requests are decided, data packets pass untouched
// whatever the chunking, and a refusal is slipped in between server packets, never inside one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FX_PERMISSION_DENIED, SftpFilter, type SftpRequest } from '../../gateway/ssh/sftp-filter.ts';

function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function packet(type: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([type]), ...parts]);
  return Buffer.concat([u32(body.length), body]);
}
const open = (id: number, path: string, flags: number) => packet(3, u32(id), str(path), u32(flags), u32(0));
const write = (id: number, data: Buffer) => packet(6, u32(id), str('h1'), u32(0), u32(0), str(data));
const realpath = (id: number, path: string) => packet(16, u32(id), str(path));
const name = (id: number, path: string) => packet(104, u32(id), u32(1), str(path), str(path), u32(0));
const data = (id: number, payload: Buffer) => packet(103, u32(id), str(payload));

/** Runs bytes through one direction in the given chunk sizes; resolves with what came out. */
async function pump(t: import('node:stream').Transform, input: Buffer, chunk: number): Promise<Buffer> {
  const out: Buffer[] = [];
  t.on('data', (d: Buffer) => out.push(d));
  for (let i = 0; i < input.length; i += chunk) {
    await new Promise<void>((r) => t.write(input.subarray(i, i + chunk), () => r()));
  }
  await new Promise((r) => setImmediate(r));
  return Buffer.concat(out);
}

test('allowed requests and data pass byte for byte, in any chunking', async () => {
  const decided: SftpRequest[] = [];
  const payload = randomBytes(70_000);
  const input = Buffer.concat([open(2, 'notes.txt', 0x1a), write(3, payload), open(4, '/srv/a/../b/c.txt', 0x01)]);
  for (const chunk of [1, 7, 4096, input.length]) {
    decided.length = 0;
    const f = new SftpFilter({ decide: async (r) => (decided.push(r), { allow: true }) });
    const toServer: Buffer[] = [];
    f.clientToServer.on('data', (d: Buffer) => toServer.push(d));
    // Clients ask REALPATH "." first; the answer is the home directory relative paths resolve against.
    await new Promise<void>((r) => f.clientToServer.write(realpath(1, '.'), () => r()));
    const fromServer = await pump(f.serverToClient, name(1, '/home/agent'), 3);
    assert.deepEqual(fromServer, name(1, '/home/agent'));
    await pump(f.clientToServer, input, chunk);
    const out = Buffer.concat(toServer);
    assert.ok(out.equals(Buffer.concat([realpath(1, '.'), input])), `chunk ${chunk}`);
    assert.deepEqual(decided, [
      { action: 'write', paths: ['/home/agent/notes.txt'] },
      { action: 'read', paths: ['/srv/b/c.txt'] },
    ]);
  }
});

test('a denied request never reaches the server; the client gets PERMISSION_DENIED naming the rule', async () => {
  const f = new SftpFilter({ decide: async (r) => (r.paths[0].startsWith('/etc/') ? { allow: false, message: 'airlock: denied by policy rule protect-etc' } : { allow: true }) });
  const serverOut: Buffer[] = [];
  f.serverToClient.on('data', (d: Buffer) => serverOut.push(d));
  // The server is in the middle of a large DATA packet when the denial is decided.
  const big = data(9, randomBytes(50_000));
  await new Promise<void>((r) => f.serverToClient.write(big.subarray(0, 1000), () => r()));
  const toServer = await pump(f.clientToServer, Buffer.concat([open(10, '/etc/passwd', 0x1a), open(11, '/tmp/ok', 0x01)]), 5);
  assert.deepEqual(toServer, open(11, '/tmp/ok', 0x01), 'only the allowed open goes upstream');
  await new Promise<void>((r) => f.serverToClient.write(big.subarray(1000), () => r()));
  await new Promise((r) => setImmediate(r));
  const toClient = Buffer.concat(serverOut);
  assert.ok(toClient.subarray(0, big.length).equals(big), 'the server packet is delivered whole, first');
  const status = toClient.subarray(big.length);
  assert.equal(status.readUInt8(4), 101);
  assert.equal(status.readUInt32BE(5), 10);
  assert.equal(status.readUInt32BE(9), FX_PERMISSION_DENIED);
  assert.match(status.toString('utf8', 17), /protect-etc/);
});

test('unknown extensions are refused as unsupported rather than passed unchecked', async () => {
  const f = new SftpFilter({ decide: async () => ({ allow: true }) });
  const serverOut: Buffer[] = [];
  f.serverToClient.on('data', (d: Buffer) => serverOut.push(d));
  const toServer = await pump(f.clientToServer, packet(200, u32(5), str('evil-exec@example.com'), str('rm -rf /')), 64);
  assert.equal(toServer.length, 0);
  const status = Buffer.concat(serverOut);
  assert.equal(status.readUInt8(4), 101);
  assert.equal(status.readUInt32BE(9), 8);
});

/** Status packets the filter answered with, in order. */
function statuses(buf: Buffer): Array<{ id: number; code: number; message: string }> {
  const out: Array<{ id: number; code: number; message: string }> = [];
  for (let o = 0; o + 4 <= buf.length; ) {
    const len = buf.readUInt32BE(o);
    const p = buf.subarray(o + 4, o + 4 + len);
    if (p.readUInt8(0) === 101) {
      const n = p.readUInt32BE(9);
      out.push({ id: p.readUInt32BE(1), code: p.readUInt32BE(5), message: p.toString('utf8', 13, 13 + n) });
    }
    o += 4 + len;
  }
  return out;
}

test('a relative path is refused while the home directory is unknown, never decided as `~/...`', async () => {
  const decided: SftpRequest[] = [];
  const f = new SftpFilter({ decide: async (r) => (decided.push(r), { allow: true }) });
  const serverOut: Buffer[] = [];
  f.serverToClient.on('data', (d: Buffer) => serverOut.push(d));
  const toServer = await pump(f.clientToServer, open(7, 'notes.txt', 0x01), 64);
  assert.equal(toServer.length, 0);
  assert.deepEqual(decided, []);
  const [s] = statuses(Buffer.concat(serverOut));
  assert.equal(s.id, 7);
  assert.equal(s.code, FX_PERMISSION_DENIED);
  assert.match(s.message, /relative path "notes.txt" cannot be resolved/);
});

test('rename decides each path on its own, so a rule on the target directory sees the second path', async () => {
  const decided: SftpRequest[] = [];
  const f = new SftpFilter({ decide: async (r) => (decided.push(r), r.paths[0].startsWith('/etc/') ? { allow: false, message: 'airlock: no' } : { allow: true }) });
  const toServer = await pump(f.clientToServer, packet(18, u32(3), str('/tmp/a'), str('/etc/passwd')), 64);
  assert.equal(toServer.length, 0);
  assert.deepEqual(decided, [
    { action: 'rename', paths: ['/tmp/a'] },
    { action: 'rename', paths: ['/etc/passwd'] },
  ]);
});

test('FSETSTAT on a handle the filter did not see opened is refused; on a known handle it is setstat of its path', async () => {
  const decided: SftpRequest[] = [];
  const f = new SftpFilter({ decide: async (r) => (decided.push(r), { allow: true }) });
  const toClient: Buffer[] = [];
  f.serverToClient.on('data', (d: Buffer) => toClient.push(d));
  const fsetstat = (id: number, handle: string) => packet(10, u32(id), str(handle), u32(0));
  const unknown = await pump(f.clientToServer, fsetstat(4, 'nope'), 64);
  assert.equal(unknown.length, 0);
  assert.match(statuses(Buffer.concat(toClient))[0].message, /handle the gateway did not see opened/);
  // open /srv/x, the server answers with handle "h7"; FSETSTAT on h7 is setstat /srv/x.
  await pump(f.clientToServer, open(5, '/srv/x', 0x1a), 64);
  await pump(f.serverToClient, packet(102, u32(5), str('h7')), 3);
  const passed = await pump(f.clientToServer, fsetstat(6, 'h7'), 64);
  assert.deepEqual(passed, fsetstat(6, 'h7'));
  assert.deepEqual(decided.at(-1), { action: 'setstat', paths: ['/srv/x'] });
});

test('a client using the request ids the gateway reserves for its own requests is cut off', async () => {
  const f = new SftpFilter({ decide: async () => ({ allow: true }) });
  const failed = new Promise<Error>((r) => f.clientToServer.on('error', r));
  f.clientToServer.write(realpath(0xffff0001, '/'));
  assert.match((await failed).message, /reserves/);
});

test('pass-through bytes leave as one piece per chunk, however SFTP packets straddle the chunks (one SSH packet each, not two)', async () => {
  // SFTP DATA/WRITE packets are 32 KiB plus a header and SSH packets are 32 KiB, so nearly every
  // chunk ends inside one SFTP packet and starts another: each piece becomes its own SSH packet.
  const f = new SftpFilter({ decide: async (r) => (r.paths[0].startsWith('/etc/') ? { allow: false, message: 'airlock: no' } : { allow: true }) });
  const chunks = (b: Buffer) => Array.from({ length: Math.ceil(b.length / 32768) }, (_, i) => b.subarray(i * 32768, (i + 1) * 32768));
  const down = Buffer.concat(Array.from({ length: 6 }, (_, i) => data(20 + i, randomBytes(32768))));
  const toClient: Buffer[] = [];
  f.serverToClient.on('data', (d: Buffer) => toClient.push(d));
  for (const c of chunks(down)) await new Promise<void>((r) => f.serverToClient.write(c, () => r()));
  assert.ok(Buffer.concat(toClient).equals(down));
  assert.equal(toClient.length, chunks(down).length, 'one piece per chunk');

  const up = Buffer.concat(Array.from({ length: 6 }, (_, i) => write(30 + i, randomBytes(32768))));
  const toServer: Buffer[] = [];
  f.clientToServer.on('data', (d: Buffer) => toServer.push(d));
  for (const c of chunks(up)) await new Promise<void>((r) => f.clientToServer.write(c, () => r()));
  assert.ok(Buffer.concat(toServer).equals(up));
  assert.equal(toServer.length, chunks(up).length, 'one piece per chunk');

  // A request inside a chunk is still decided on its own: a denied one is cut out, what surrounds it passes.
  toServer.length = 0;
  const w1 = write(40, randomBytes(100));
  const w2 = write(41, randomBytes(100));
  const mixed = Buffer.concat([w1, open(42, '/etc/shadow', 0x01), w2, open(43, '/tmp/fine', 0x01)]);
  await new Promise<void>((r) => f.clientToServer.write(mixed, () => r()));
  assert.ok(Buffer.concat(toServer).equals(Buffer.concat([w1, w2, open(43, '/tmp/fine', 0x01)])));
  assert.deepEqual(statuses(Buffer.concat(toClient).subarray(down.length)).map((s) => s.id), [42]);
});
