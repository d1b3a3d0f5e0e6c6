// `airlock mcp` (stdio, the real CLI in a child process) in front of the gateway's MCP endpoint as
// `airlock gateway` starts it from the config's `mcp` block, with approvals through the real
// Temporal workflow and the local channel: the agent sees progress while a proxied tool call is
// held, a signed decision releases it, and a masked query comes back masked over stdio too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { TemporalApprover } from '../../gateway/approvals/temporal-approver.ts';
import { log } from '../../gateway/log.ts';
import { startMcpFromConfig } from '../../gateway/mcp/from-config.ts';
import type { McpHttpGateway } from '../../gateway/mcp/http.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { startUpstreamMcp, type UpstreamMcp } from '../support/mcp-upstream.ts';
import { eventually, startHarness, type Harness } from '../workflows/harness.ts';

const ROOT = join(import.meta.dirname, '..', '..');
let w: Harness;
let h: GatewayHarness;
let up: UpstreamMcp;
let mcp: McpHttpGateway;

before(async () => {
  w = await startHarness();
  up = await startUpstreamMcp();
  const approver = new TemporalApprover({ client: w.temporal.client, taskQueue: w.taskQueue, store: w.store, channelsDescription: 'the local channel' });
  h = await startGateway({
    setup: `DROP TABLE IF EXISTS people; CREATE TABLE people (id int, email text); INSERT INTO people VALUES (1, 'dana@example.com');`,
    approver,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.people.email', strategy: 'redact' }] },
      mcp: { listen: { host: '127.0.0.1', port: 0 }, maxHold: '2m', upstreams: [{ name: 'ops', url: up.url }] },
      policy: { rules: [{ name: 'deploys-reviewed', match: { protocols: ['mcp'], text: ['^ops/deploy '] }, action: 'review', review: { approvers: ['dba'], timeout: '5m' } }] },
    }),
  });
  mcp = await startMcpFromConfig({
    loaded: h.loaded,
    policy: new PolicyEngine(h.loaded.config.policy, h.loaded.config.masking, h.loaded.config.connections),
    store: h.store,
    approver,
    logger: log,
    postgres: { host: h.gateway.host, port: h.gateway.port },
  });
});

after(async () => {
  await mcp?.close();
  await h?.close();
  await up?.close();
  await w?.close();
});

async function stdioClient(): Promise<Client> {
  const token = await h.token('agent-1');
  const client = new Client({ name: 'stdio-agent', version: '1' });
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [join(ROOT, 'bin', 'airlock.js'), 'mcp', '--url', mcp.url],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', AIRLOCK_TOKEN: token },
      cwd: ROOT,
      stderr: 'pipe',
    }),
  );
  return client;
}

function textOf(r: CallToolResult): string {
  return r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');
}

describe('airlock mcp over stdio', () => {
  it('a masked query comes back masked', async () => {
    const c = await stdioClient();
    try {
      const r = (await c.callTool({ name: 'postgres_query', arguments: { connection: 'app', sql: 'SELECT id, email FROM people' } })) as CallToolResult;
      assert.ok(!r.isError, textOf(r));
      assert.ok(!textOf(r).includes('dana@example.com'), textOf(r));
      assert.equal((r.structuredContent as { rows: unknown[][] }).rows.length, 1);
    } finally {
      await c.close();
    }
  });

  it('a held tool call reports progress and runs once approved through the Temporal workflow', async () => {
    const c = await stdioClient();
    try {
      await c.listTools();
      const progress: string[] = [];
      const call = c.callTool({ name: 'ops__deploy', arguments: { service: 'billing', version: '7', reason: 'release 7', ticket: 'REL-7' } }, undefined, {
        onprogress: (p) => progress.push(p.message ?? ''),
        timeout: 120_000,
        resetTimeoutOnProgress: true,
      });
      const requestId = await eventually(() => /request (\S+) posted to/.exec(progress.join('\n'))?.[1], 60_000, 'the posted notice as progress');
      const posted = await eventually(() => w.local.get(requestId), 10_000, 'the request in the local channel');
      assert.match(JSON.stringify(posted), /release 7/);
      assert.match(JSON.stringify(posted), /REL-7/);
      assert.equal(up.calls.filter((x) => x.tool === 'deploy').length, 0);
      const d = await submitDecision(w.temporal.client, w.store, w.sign({ requestId, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
      assert.equal(d.ok, true, JSON.stringify(d));
      const r = (await call) as CallToolResult;
      assert.equal(textOf(r), 'deployed billing@7');
      assert.deepEqual(up.calls.at(-1), { tool: 'deploy', args: { service: 'billing', version: '7' } });
    } finally {
      await c.close();
    }
  });

  it('a bad token is refused', async () => {
    const client = new Client({ name: 'stdio-agent', version: '1' });
    const t = new StdioClientTransport({
      command: process.execPath,
      args: [join(ROOT, 'bin', 'airlock.js'), 'mcp', '--url', mcp.url, '--token', 'forged'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' },
      cwd: ROOT,
      stderr: 'pipe',
    });
    await assert.rejects(client.connect(t, { timeout: 30_000 }), /401|Airlock gateway|Unauthorized|invalid/i);
    await client.close().catch(() => undefined);
  });
});
