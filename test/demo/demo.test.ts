// The README's first command, end to end: real embedded PostgreSQL, real Temporal dev server,
// the real gateway and worker, and the real psql client driven by the scripted tour.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo } from '../../gateway/demo/demo.ts';

test('the offline demo masks, blocks, limits and holds, and records it all', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-demo-'));
  const lines: string[] = [];
  try {
    await runDemo({ dir, interactive: false, waitForExit: async () => {}, out: (l) => lines.push(l) });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const out = lines.join('\n');
  // Masked columns: keyed hashes for emails, last four digits of cards, redacted SSNs.
  assert.match(out, /\| h:[0-9a-f]{16} \| \*{12}1111 \| \[redacted\]/);
  assert.doesNotMatch(out, /4111111111111111|5555555555554444/);
  assert.doesNotMatch(out, /[a-z0-9._-]+@example\.(com|org|net)/i, 'no raw email reaches the agent');
  assert.match(out, /\[redacted:email\]/, 'detectors catch derived columns and free text');
  assert.match(out, /ERROR: {2}Airlock denied this statement: rule block-destructive-ddl/);
  // The recommended profile: transformed masked columns and DO blocks are refused.
  assert.match(out, /ERROR: {2}Airlock denied this statement: rule masked-expression/);
  assert.match(out, /ERROR: {2}Airlock denied this statement: rule recommended-no-dynamic-code/);
  assert.match(out, /ERROR: {2}Airlock denied this statement: rule block-unbounded-writes/);
  assert.match(out, /ERROR: {2}Airlock row limit reached: rule agent-read-limit allows at most 50 rows/);
  assert.match(out, /refused: alice owns the requesting agent agent-7/);
  assert.match(out, /--as bob\napproved/);
  assert.match(out, /NOTICE: {2}approval required: request airlock-[0-9a-f]+ posted to the local channel/);
  assert.match(out, /UPDATE 1/);
  assert.match(out, /REVIEW +write +rule agent-writes-need-a-dba[\s\S]*approved by bob[\s\S]*result +UPDATE 1/);
  // The held UPDATE shows its effect (a dry run, rolled back, sample masked) and the agent's reason.
  assert.match(out, /Preview \(dry-run\): dry run: UPDATE 1, rolled back; sample of rows as written \(after\)\n.*city[\s\S]*Oslo/);
  assert.match(out, /agent's reason: "customer 1 moved to Oslo" \(sql comment\)\nticket: SUP-311\nagent's owner: alice\nbefore this: /);
});

test('the demo runs again in the same directory: the held UPDATE is held again, not waved through by the last run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-demo-'));
  try {
    for (let run = 1; run <= 2; run++) {
      const lines: string[] = [];
      await runDemo({ dir, interactive: false, waitForExit: async () => {}, out: (l) => lines.push(l) });
      const out = lines.join('\n');
      assert.match(out, /NOTICE: {2}approval required: request airlock-[0-9a-f]+ posted to the local channel/, `run ${run}`);
      assert.match(out, /--as bob\napproved\nUPDATE 1/, `run ${run}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
