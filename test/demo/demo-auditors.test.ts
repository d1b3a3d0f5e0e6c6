// `npm run demo` for auditors: while the demo runs, the URLs it prints answer — the auditor
// console (an auditors token reads the tour's sessions, an agent token is refused) and the
// Temporal Web UI where approval workflows can be listed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { runDemo } from '../../gateway/demo/demo.ts';

test('the demo prints the auditor console and the Temporal Web UI, and both answer while it runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-demo-auditors-'));
  const lines: string[] = [];
  let checked = false;
  try {
    await runDemo({
      dir,
      interactive: true,
      out: (l) => lines.push(l),
      waitForExit: async () => {
        const out = lines.join('\n');
        const consoleUrl = /Auditor console \(read-only\): (http:\/\/\S+)/.exec(out)?.[1];
        const uiUrl = /Temporal Web UI: (http:\/\/\S+)/.exec(out)?.[1];
        assert.ok(consoleUrl, out);
        assert.ok(uiUrl, out);
        assert.match(out, /AirlockRequester="agent-7"/);
        const loaded = loadConfig(join(dir, 'airlock.yaml'));
        const auditor = await mintToken(tokenSettings(loaded), { name: 'audrey', groups: ['auditors'] });
        const agent = await mintToken(tokenSettings(loaded), { name: 'agent-7', groups: ['agents'] });
        const page = await fetch(consoleUrl);
        assert.equal(page.status, 200);
        assert.match(await page.text(), /Airlock audit console/);
        assert.equal((await fetch(consoleUrl + 'api/sessions', { headers: { authorization: `Bearer ${agent}` } })).status, 403);
        const res = await fetch(consoleUrl + 'api/sessions?identity=agent-7', { headers: { authorization: `Bearer ${auditor}` } });
        assert.equal(res.status, 200);
        const { sessions } = (await res.json()) as { sessions: { identity: string }[] };
        assert.ok(sessions.length >= 1 && sessions.every((s) => s.identity === 'agent-7'));
        const approvals = (await (await fetch(consoleUrl + 'api/approvals', { headers: { authorization: `Bearer ${auditor}` } })).json()) as { requests: { status: string }[] };
        assert.ok(approvals.requests.some((r) => r.status === 'approved'), JSON.stringify(approvals));
        const ui = await fetch(uiUrl);
        assert.equal(ui.status, 200);
        checked = true;
      },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(checked);
});
