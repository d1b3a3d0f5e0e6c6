// Benchmark (not a test): this process's CPU per 64 KiB read relayed through FrameReader and
// WriteBatch to a real loopback socket, the PostgreSQL session's pass-through path for a large
// result, with the batch written as one concatenated buffer (take + write, before round 4) and by
// WriteBatch.writeTo (a message that straddled two reads and the rest of the chunk, corked: one
// writev, no copy of the chunk).
//   node --import tsx scripts/bench-write-batch.ts [--rounds 14]
// The reading end is another process that discards the bytes, so only the relaying is measured.
// The first rounds warm up the JIT; compare the later ones, pair by pair (interleaved).
import { spawn } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { FrameReader, MAX_FRONTEND_MESSAGE, WriteBatch } from '../gateway/postgres/frames.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '14' } } });
const rounds = Number(values.rounds);

const sink = spawn(process.execPath, ['-e', `require('net').createServer((s) => s.on('data', () => {})).listen(0, '127.0.0.1', function () { console.log(this.address().port); })`], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const port = await new Promise<number>((resolve) => sink.stdout?.once('data', (d) => resolve(Number(String(d)))));
const socket = net.connect(port, '127.0.0.1');
socket.setNoDelay(true);
await new Promise((resolve) => socket.once('connect', resolve));

// DataRows of 70 bytes cut into 64 KiB reads: almost every read starts inside a message.
const row = Buffer.alloc(70, 0x61);
row[0] = 0x44;
row.writeInt32BE(69, 1);
const stream = Buffer.concat(Array.from({ length: 40_000 }, () => row));
const reads: Buffer[] = [];
for (let at = 0; at < stream.length; at += 65_536) reads.push(Buffer.from(stream.subarray(at, at + 65_536)));

async function relay(how: 'take' | 'writeTo'): Promise<number> {
  const reader = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  const batch = new WriteBatch();
  const start = process.cpuUsage();
  let n = 0;
  for (let rep = 0; rep < 20; rep++) {
    for (const chunk of reads) {
      reader.push(chunk);
      while (reader.next()) batch.add(reader.buf, reader.start, reader.end, reader.frameIsTransient);
      const ok = how === 'take' ? socket.write(batch.take() as Buffer) : batch.writeTo(socket);
      n++;
      if (!ok) await new Promise((resolve) => socket.once('drain', resolve));
    }
  }
  const cpu = process.cpuUsage(start);
  return (cpu.user + cpu.system) / n;
}

for (let i = 1; i <= rounds; i++) {
  const a = await relay('take');
  const b = await relay('writeTo');
  console.log(`round ${i}: take + write ${a.toFixed(1)} us per read, writeTo ${b.toFixed(1)} us per read (${((b / a - 1) * 100).toFixed(0)} %)`);
}
socket.destroy();
sink.kill();
