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
