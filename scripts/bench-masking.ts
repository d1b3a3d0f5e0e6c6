// Benchmark (not a test): CPU time of the PostgreSQL masking layer alone, per masked row and per
// masked result, without sockets, pgbench or psql, so a change to the masker can be judged on a
// busy machine where end-to-end numbers are noise. The catalog is a real embedded PostgreSQL.
//   node --import tsx scripts/bench-masking.ts [--rounds 5]
// Reported (best round, CPU time of this process per unit):
//   - DataRow: a 3-column row (id int, email text masked `redact`, note text with the email
//     detector: bench-pg.ts's export table), cut from 64 KiB chunks like the session does;
//   - COPY: the same row as a text-format CopyData message, masked into a new message (with
//     maskFrameRegion when the tree has it, as the session calls it);
//   - result setup: the masker of a one-column result (pgbench -S's `abalance` masked `null`)
//     from its RowDescription, with a new MaskPlan object each time (as decisions carry), plus
//     masking its one row: what a masked statement costs on top of an unmasked one.
// Runs against older trees too (falls back to the APIs they have), for A/B comparisons.
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startPostgres } from '../gateway/demo/embedded-postgres.ts';
import { parseRowDescription } from '../gateway/postgres/masking-api.ts';
import { createMaskerFactory, type FieldInfo } from '../gateway/postgres/row-masker.ts';
import type { MaskPlan } from '../gateway/policy/decision.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' } } });
const rounds = Number(values.rounds);

const db = await startPostgres();
const connect = async () => {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: 'postgres' });
  await c.connect();
  return c;
};
const admin = await connect();
try {
  await admin.query('CREATE TABLE bench_export (id int, email text, note text); CREATE TABLE accounts (aid int, abalance int)');
  const oid = async (t: string) => Number((await admin.query(`SELECT '${t}'::regclass::oid::int8 AS o`)).rows[0].o);
  const exportOid = await oid('bench_export');
  const accountsOid = await oid('accounts');
  const factory = createMaskerFactory({ connect, hashKey: 'bench' });
  const plan = (): MaskPlan => ({
    columns: [
      { column: 'public.bench_export.email', strategy: 'redact', rule: 'r' },
      { column: 'public.accounts.abalance', strategy: 'null', rule: 'r' },
    ],
    detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }],
    denyMaskedExpressions: false,
  });
  const fields: FieldInfo[] = [
    { name: 'id', tableOid: exportOid, columnId: 1, typeOid: 23, format: 0 },
    { name: 'email', tableOid: exportOid, columnId: 2, typeOid: 25, format: 0 },
    { name: 'note', tableOid: exportOid, columnId: 3, typeOid: 25, format: 0 },
  ];

  // 1000 rows per chunk, like a socket read of an export.
  const rows: Buffer[] = [];
  const copies: Buffer[] = [];
  for (let i = 1; i <= 1000; i++) {
    const vals = [String(i), `user${i}@example.com`, createHash('md5').update(String(i)).digest('hex')].map((v) => Buffer.from(v));
    const len = 6 + vals.reduce((n, v) => n + 4 + v.length, 0);
    const r = Buffer.alloc(1 + len);
    r[0] = 0x44;
    r.writeInt32BE(len, 1);
    r.writeInt16BE(3, 5);
    let off = 7;
    for (const v of vals) {
      off = r.writeInt32BE(v.length, off);
      off += v.copy(r, off);
    }
    rows.push(r);
    const line = Buffer.from(`${vals.join('\t')}\n`);
    const c = Buffer.alloc(5 + line.length);
    c[0] = 0x64;
    c.writeInt32BE(4 + line.length, 1);
    line.copy(c, 5);
    copies.push(c);
  }
  const rowChunk = Buffer.concat(rows);
  const copyChunk = Buffer.concat(copies);

  // One-column result: RowDescription and its row.
  const name = Buffer.from('abalance\0');
  const rd = Buffer.alloc(7 + name.length + 18);
  rd[0] = 0x54;
  rd.writeInt32BE(rd.length - 1, 1);
  rd.writeInt16BE(1, 5);
  name.copy(rd, 7);
  let o = 7 + name.length;
  o = rd.writeUInt32BE(accountsOid, o);
  o = rd.writeInt16BE(2, o);
  o = rd.writeUInt32BE(23, o);
  o = rd.writeInt16BE(4, o);
  o = rd.writeInt32BE(-1, o);
  rd.writeInt16BE(0, o);
  const oneRow = Buffer.from([0x44, 0, 0, 0, 14, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7]);

  // Warm the catalog cache (the async path), as a running gateway has.
  await factory.forResult(fields, plan());
  await factory.forResult(parseRowDescription(rd, 0, rd.length), plan());
  const copyMasker = (await factory.forCopy(plan(), 'public.bench_export'))!;

  const cpu = (f: () => void): number => {
    const t0 = process.cpuUsage();
    f();
    const t = process.cpuUsage(t0);
    return (t.user + t.system) * 1000; // ns
  };
  const REPEAT = 200;
  const SETUPS = 100_000;
  const best = { row: Infinity, copy: Infinity, setup: Infinity };
  for (let round = 1; round <= rounds; round++) {
    const masker = factory.forResultCached!(fields, plan())!;
    const row = cpu(() => {
      for (let k = 0; k < REPEAT; k++) {
        for (let off = 0; off < rowChunk.length; ) {
          const len = rowChunk.readInt32BE(off + 1) + 1;
          // What the session calls: since round 3 the row in place in the chunk, the result in a
          // slab region (older trees: a view per row and a Buffer per masked row).
          if (masker.maskDataRowRegion) masker.maskDataRowRegion(rowChunk, off, off + len);
          else masker.maskDataRow(rowChunk.subarray(off, off + len));
          off += len;
        }
      }
    }) / (REPEAT * 1000);
    const copy = cpu(() => {
      for (let k = 0; k < REPEAT; k++) {
        for (let off = 0; off < copyChunk.length; ) {
          const len = copyChunk.readInt32BE(off + 1) + 1;
          // What the session calls: since round 3 the message in place in the chunk, the result in
          // a slab region (no Buffer per message in or out).
          if (copyMasker.maskFrameRegion) {
            copyMasker.maskFrameRegion(copyChunk, off, off + len);
            off += len;
            continue;
          }
          const frame = copyChunk.subarray(off, off + len);
          if (copyMasker.maskFrame) copyMasker.maskFrame(frame);
          else {
            // Older trees: the masked line, then the CopyData message around it (as their session did).
            const line = copyMasker.maskLine(frame.subarray(5));
            const out = Buffer.allocUnsafe(5 + line.length);
            out[0] = 0x64;
            out.writeInt32BE(4 + line.length, 1);
            line.copy(out, 5);
          }
          off += len;
        }
      }
    }) / (REPEAT * 1000);
    const setup = cpu(() => {
      for (let i = 0; i < SETUPS; i++) {
        const m = factory.forRowDescriptionCached ? factory.forRowDescriptionCached(rd, plan()) : factory.forResultCached!(parseRowDescription(rd, 0, rd.length), plan());
        m!.maskDataRow(oneRow);
      }
    }) / SETUPS;
    best.row = Math.min(best.row, row);
    best.copy = Math.min(best.copy, copy);
    best.setup = Math.min(best.setup, setup);
    process.stderr.write(`  round ${round}: DataRow ${row.toFixed(0)} ns/row, COPY ${copy.toFixed(0)} ns/row, result setup ${(setup / 1000).toFixed(2)} us\n`);
  }
  console.log(`best of ${rounds}: masked DataRow ${best.row.toFixed(0)} ns/row, masked COPY ${best.copy.toFixed(0)} ns/row, masked result setup ${(best.setup / 1000).toFixed(2)} us/result`);
  await factory.close();
} finally {
  await admin.end();
  await db.stop();
}
