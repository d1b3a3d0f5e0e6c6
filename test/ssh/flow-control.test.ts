// Backpressure through the gateway: a client that stops reading stops the target, so a large
// transfer to a slow reader holds a bounded amount in the gateway (its channel windows and stream
// buffers), never the transfer. Then everything arrives, byte for byte, once the client reads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import ssh2, { type ClientChannel, type Client as SshClient } from 'ssh2';
import { giveToUser } from '../support/sshd.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

const MiB = 1024 * 1024;
let h: SshHarness;
let work: string;

before(async () => {
  h = await startSshHarness({ default: 'allow', rules: [] });
  work = mkdtempSync(join(tmpdir(), 'airlock-flow-'));
  giveToUser(h.sshd, work);
});

after(async () => {
  await h?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function login(): Promise<SshClient> {
  const token = await h.token('alice');
  const c = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    c.once('ready', () => resolve());
    c.once('error', reject);
    c.connect({
      host: '127.0.0.1',
      port: h.gateway.port,
      username: 'box',
      password: token,
      hostVerifier: (key: Buffer) => `${h.gateway.hostPublicKey.split(' ')[0]} ${key.toString('base64')}` === h.gateway.hostPublicKey,
    });
  });
  return c;
}

/** Polls `read` until it has not changed for `quietMs` (the transfer has stalled), or 20 s passed. */
async function settled<T>(read: () => T, quietMs = 600): Promise<T> {
  let last = read();
  let since = Date.now();
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 100));
    const now = read();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return now;
  }
  return last;
}

/** Bytes held in ArrayBuffers by this process (gateway and test client) after a full GC. */
function liveBufferBytes(): number {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  return process.memoryUsage().arrayBuffers;
}

test('exec: a client that stops reading stops the remote command; the gateway holds a bounded amount, then relays all of it', async () => {
  const blocks = 160; // of 256 KiB: 40 MiB in all
  const progress = join(work, 'exec-progress');
  writeFileSync(progress, '0');
  giveToUser(h.sshd, progress);
  const c = await login();
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) =>
      c.exec(`for i in $(seq 1 ${blocks}); do dd if=/dev/zero bs=262144 count=1 status=none; echo $i > ${progress}; done`, (err, s) => (err ? reject(err) : resolve(s))),
    );
    let code: number | null = null;
    ch.on('exit', (c: number | null) => (code = c));
    const closed = new Promise((r) => ch.once('close', r));
    ch.pause();
    const written = Number(await settled(() => readFileSync(progress, 'utf8').trim()));
    // In flight at most: the pipe, sshd's buffer (the gateway's window), the gateway's channel
    // buffers both ways and the client's window: about 8 MiB, nowhere near the 40 MiB.
    assert.ok(written * 256 * 1024 < 24 * MiB, `the remote wrote ${written} blocks (${((written * 256) / 1024).toFixed(1)} MiB) while nobody read`);
    let got = 0;
    let nonZero = false;
    ch.on('data', (d: Buffer) => {
      got += d.length;
      if (!nonZero && d.some((b) => b !== 0)) nonZero = true;
    });
    ch.resume();
    await closed;
    assert.equal(code, 0);
    assert.equal(got, blocks * 256 * 1024);
    assert.equal(nonZero, false);
  } finally {
    c.end();
  }
});

// SFTP v3 packets for a raw client: the client below asks for the whole file at once and then
// does not read, the worst case for the download direction (READ answers flow through the filter).
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const str = (s: string | Buffer) => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
};
const packet = (type: number, ...parts: Buffer[]) => {
  const body = Buffer.concat([Buffer.from([type]), ...parts]);
  return Buffer.concat([u32(body.length), body]);
};

/** Splits an SFTP stream into packets; `onPacket(type, id, body)`. */
function sftpParser(onPacket: (type: number, id: number, body: Buffer) => void): (d: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (d) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
      const len = pending.readUInt32BE(0);
      const body = pending.subarray(4, 4 + len);
      onPacket(body[0], body.length >= 5 ? body.readUInt32BE(1) : 0, body);
      pending = pending.subarray(4 + len);
    }
  };
}

test('sftp: a download to a client that stops reading keeps the gateway bounded; every byte arrives once it reads', async () => {
  const size = 96 * MiB;
  const file = join(work, 'big.bin');
  writeFileSync(file, '');
  truncateSync(file, size); // sparse: zeros, instant
  giveToUser(h.sshd, file);
  const c = await login();
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) => c.subsys('sftp', (err, s) => (err ? reject(err) : resolve(s))));
    let handle: Buffer | undefined;
    let dataBytes = 0;
    let answers = 0;
    let failed = '';
    const opened = new Promise<void>((resolve) => {
      ch.on(
        'data',
        sftpParser((type, id, body) => {
          if (type === 102 && id === 1) {
            handle = body.subarray(9, 9 + body.readUInt32BE(5));
            resolve();
          } else if (type === 103) {
            dataBytes += body.readUInt32BE(5);
            answers++;
          } else if (type === 101 && id >= 100) {
            failed = `status ${body.readUInt32BE(5)} for READ ${id}`;
            answers++;
          } else if (type === 101) failed = `status ${body.readUInt32BE(5)} for request ${id}`;
        }),
      );
    });
    ch.write(packet(1, u32(3))); // INIT
    ch.write(packet(3, u32(1), str(file), u32(0x01), u32(0))); // OPEN read
    await opened;
    const reads = size / 32768;
    const before = liveBufferBytes();
    ch.pause();
    const requests: Buffer[] = [];
    for (let i = 0; i < reads; i++) requests.push(packet(5, u32(100 + i), str(handle as Buffer), u32(0), u32(i * 32768), u32(32768)));
    ch.write(Buffer.concat(requests));
    await settled(() => process.memoryUsage().arrayBuffers);
    const held = liveBufferBytes() - before;
    // Bounded by the channel windows and stream buffers (about 12 MiB of data, in read buffers
    // it shares): 20-25 MiB measured; relaying without backpressure holds all of it (140 MiB).
    assert.ok(held < 48 * MiB, `${(held / MiB).toFixed(1)} MiB held while the client did not read a ${size / MiB} MiB download`);
    const all = new Promise<void>((resolve) => {
      const check = () => (answers === reads ? resolve() : setTimeout(check, 20));
      check();
    });
    ch.resume();
    await all;
    assert.equal(failed, '');
    assert.equal(dataBytes, size);
    ch.end();
  } finally {
    c.end();
  }
});
