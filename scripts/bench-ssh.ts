// scp throughput through the Airlock SSH gateway as a ratio of direct scp to the same sshd.
//   node --import tsx scripts/bench-ssh.ts [sizeMiB=128] [rounds=3]
// Starts a real sshd (test/support/sshd.ts) and the gateway in this process, copies one file up
// and down each way, and prints the best time of each as a ratio (1.00 = no overhead), the
// throughput ratio (direct time / gateway time; the goal is >= 0.8) and the gateway's own CPU time
// per MiB (user + system of this process, which hosts only the gateway: a measure that holds up on
// a busy machine, where wall times do not) and the SSH data packets the gateway sent per MiB (a
// count, steadier still). Writes bench-results/ssh.json with every round.
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { giveToUser, run } from '../test/support/sshd.ts';
import { startSshHarness } from '../test/ssh/harness.ts';

const sizeMiB = Number(process.argv[2] ?? 128);
const rounds = Number(process.argv[3] ?? 3);
if (!Number.isFinite(sizeMiB) || sizeMiB <= 0 || !Number.isInteger(rounds) || rounds <= 0) {
  console.error('usage: bench-ssh.ts [sizeMiB>0] [rounds>0]');
  process.exit(2);
}

const require = createRequire(import.meta.url);
const { bindingAvailable } = require('ssh2/lib/protocol/crypto.js') as { bindingAvailable: boolean };
// SSH data packets the gateway sends (both legs): per-packet work dominates its CPU, and unlike
// CPU time this count does not move with the load on a shared machine. Counting only.
const Protocol = require('ssh2/lib/protocol/Protocol.js') as { prototype: { channelData(this: unknown, id: number, data: Buffer): unknown } };
const packets = { sent: 0 };
const channelData = Protocol.prototype.channelData;
Protocol.prototype.channelData = function (this: unknown, id: number, data: Buffer) {
  packets.sent++;
  return channelData.call(this, id, data);
};

const h = await startSshHarness({ default: 'allow', rules: [] });
const work = mkdtempSync(join(tmpdir(), 'airlock-bench-ssh-'));
giveToUser(h.sshd, work);
try {
  const src = join(work, 'payload.bin');
  const fd = openSync(src, 'w');
  const block = randomBytes(1024 * 1024);
  for (let i = 0; i < sizeMiB; i++) writeSync(fd, block);
  closeSync(fd);
  const digest = createHash('sha256').update(readFileSync(src)).digest('hex');

  const common = ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'Compression=no', '-o', 'LogLevel=ERROR'];
  const direct = (from: string, to: string) =>
    run('scp', [...common, '-i', h.sshd.clientKeyPath, '-P', String(h.sshd.port), from.replace('remote:', `${h.sshd.user}@127.0.0.1:`), to.replace('remote:', `${h.sshd.user}@127.0.0.1:`)], { timeoutMs: 600_000 });
  const viaGateway = (from: string, to: string) => h.scp('box', from.replace('remote:', 'gw:'), to.replace('remote:', 'gw:'));

  const samples: Record<string, { ms: number[]; cpuMs: number[]; packetsSent: number[] }> = {};
  async function timed(label: string, f: () => Promise<{ code: number | null; stderr: string }>): Promise<number> {
    let best = Infinity;
    const s = (samples[label] = { ms: [] as number[], cpuMs: [] as number[], packetsSent: [] as number[] });
    for (let i = 0; i < rounds; i++) {
      packets.sent = 0;
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const r = await f();
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const c = process.cpuUsage(c0);
      if (r.code !== 0) throw new Error(`${label} failed: ${r.stderr}`);
      s.ms.push(Math.round(ms));
      s.cpuMs.push(Math.round((c.user + c.system) / 1000));
      s.packetsSent.push(packets.sent);
      best = Math.min(best, ms);
    }
    return best;
  }

  const check = (p: string) => {
    if (createHash('sha256').update(readFileSync(p)).digest('hex') !== digest) throw new Error(`${p}: checksum mismatch`);
  };
  const upDirect = await timed('direct upload', () => direct(src, `remote:${join(work, 'up-direct.bin')}`));
  check(join(work, 'up-direct.bin'));
  const upGw = await timed('gateway upload', () => viaGateway(src, `remote:${join(work, 'up-gw.bin')}`));
  check(join(work, 'up-gw.bin'));
  const downDirect = await timed('direct download', () => direct(`remote:${src}`, join(work, 'down-direct.bin')));
  check(join(work, 'down-direct.bin'));
  const downGw = await timed('gateway download', () => viaGateway(`remote:${src}`, join(work, 'down-gw.bin')));
  check(join(work, 'down-gw.bin'));

  const mbps = (ms: number) => ((sizeMiB / ms) * 1000).toFixed(1);
  console.log(`ssh2 native crypto binding: ${bindingAvailable ? 'loaded' : 'NOT loaded (npm rebuild ssh2)'}`);
  console.log(`file ${sizeMiB} MiB, best of ${rounds}, checksums verified`);
  console.log(`upload    direct ${upDirect.toFixed(0)} ms (${mbps(upDirect)} MiB/s)   via Airlock ${upGw.toFixed(0)} ms (${mbps(upGw)} MiB/s)   ratio ${(upGw / upDirect).toFixed(2)}x`);
  console.log(`download  direct ${downDirect.toFixed(0)} ms (${mbps(downDirect)} MiB/s)   via Airlock ${downGw.toFixed(0)} ms (${mbps(downGw)} MiB/s)   ratio ${(downGw / downDirect).toFixed(2)}x`);
  const cpuPerMiB = (label: string) => Math.min(...samples[label].cpuMs) / sizeMiB;
  const packetsPerMiB = (label: string) => +(Math.min(...samples[label].packetsSent) / sizeMiB).toFixed(1);
  const summary = {
    at: new Date().toISOString(),
    sizeMiB,
    rounds,
    nativeCrypto: bindingAvailable,
    upload: { directMs: Math.round(upDirect), gatewayMs: Math.round(upGw), timeRatio: +(upGw / upDirect).toFixed(3), throughputRatio: +(upDirect / upGw).toFixed(3), gatewayCpuMsPerMiB: +cpuPerMiB('gateway upload').toFixed(2), gatewayPacketsSentPerMiB: packetsPerMiB('gateway upload') },
    download: { directMs: Math.round(downDirect), gatewayMs: Math.round(downGw), timeRatio: +(downGw / downDirect).toFixed(3), throughputRatio: +(downDirect / downGw).toFixed(3), gatewayCpuMsPerMiB: +cpuPerMiB('gateway download').toFixed(2), gatewayPacketsSentPerMiB: packetsPerMiB('gateway download') },
    samples,
    goal: 'throughputRatio >= 0.8 both ways',
  };
  console.log(`throughput ratio (direct time / gateway time): upload ${summary.upload.throughputRatio}, download ${summary.download.throughputRatio} (goal >= 0.8)`);
  console.log(`gateway CPU per MiB: upload ${summary.upload.gatewayCpuMsPerMiB} ms, download ${summary.download.gatewayCpuMsPerMiB} ms`);
  // 32 data packets per MiB each way is the floor with 32 KiB packets (OpenSSH sends no larger ones).
  console.log(`gateway SSH data packets sent per MiB (both legs; floor about 32 + the replies): upload ${summary.upload.gatewayPacketsSentPerMiB}, download ${summary.download.gatewayPacketsSentPerMiB}`);
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(join('bench-results', 'ssh.json'), JSON.stringify(summary, null, 2) + '\n');
  writeFileSync(join(work, 'done'), '');
} finally {
  await h.close();
  rmSync(work, { recursive: true, force: true });
}
