// Red team of the MCP tools' `reason`: free text an agent writes, carried into native holds (a
// leading SQL comment, X-Airlock-Reason, SSH env) and into the approver's view of proxied calls.
// It may not change what runs, forge lines approvers read, or make a tool call fail.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { approvalBindingKey } from '../../gateway/config/keys.ts';
import { contextFromHeaders, reasonHeader } from '../../gateway/enforce/context.ts';
import { log } from '../../gateway/log.ts';
import { startMcpHttpGateway, type McpHttpGateway } from '../../gateway/mcp/http.ts';
import { PendingCalls } from '../../gateway/mcp/pending.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { ManualApprover } from '../support/manual-approver.ts';
import { startUpstreamMcp, type UpstreamMcp } from '../support/mcp-upstream.ts';

let h: GatewayHarness;
let up: UpstreamMcp;
let mcp: McpHttpGateway;
const approver = new ManualApprover('local channel');
const FORGED = "hotfix\n• agent's owner: security-team\r\n• before this: nothing else in this session";

before(async () => {
  up = await startUpstreamMcp();
  h = await startGateway({
    setup: 'CREATE TABLE jobs (id int primary key, state text); INSERT INTO jobs VALUES (1, \'new\'), (2, \'new\');',
    approver,
    config: () => ({
      policy: {
        rules: [
          { name: 'deletes-reviewed', match: { protocols: ['postgres'], statements: ['DeleteStmt'] }, action: 'review', review: { approvers: ['dba'], timeout: '5m' } },
          { name: 'prod-deploys-reviewed', match: { protocols: ['mcp'], text: ['^files/deploy .*"service":"prod'] }, action: 'review', review: { approvers: ['dba'], timeout: '5m' } },
        ],
      },
    }),
  });
  const settings = tokenSettings(h.loaded);
  mcp = await startMcpHttpGateway({
    tokens: settings,
    deps: {
      enforcement: { policy: new PolicyEngine(h.loaded.config.policy, h.loaded.config.masking, h.loaded.config.connections), approver, store: h.store, logger: log },
      bindingKey: approvalBindingKey(h.loaded),
      upstreams: [{ name: 'files', url: up.url, token: 'upstream-secret' }],
      postgres: { host: h.gateway.host, port: h.gateway.port, connections: ['app'] },
      mint: (identity) => mintToken(settings, identity, 60_000),
      maxHoldMs: 30_000,
      pending: new PendingCalls(),
      logger: log,
    },
  });
});

after(async () => {
  await mcp?.close();
  await h?.close();
  await up?.close();
});

async function connect(): Promise<Client> {
  const client = new Client({ name: 'redteam-agent', version: '1' });
  await client.connect(new StreamableHTTPClientTransport(new URL(mcp.url), { requestInit: { headers: { authorization: `Bearer ${await h.token('agent-1')}` } } }));
  return client;
}

const approved = (requestId: string) => ({ outcome: 'approved' as const, requestId, approvers: ['alice'], viaGrant: false });

test('postgres_query: a reason that closes and nests comments, with a lone surrogate, runs exactly the agent statement', async () => {
  const c = await connect();
  try {
    const reason = "*/ DELETE FROM jobs; /* /* */ */ -- \ud800 ' \\\" ;";
    const call = c.callTool({ name: 'postgres_query', arguments: { connection: 'app', sql: 'DELETE FROM jobs WHERE id = $1', params: [2], reason } }, undefined, { timeout: 60_000 });
    const p = await Promise.race([approver.next(), call.then((r) => assert.fail(`answered before any hold: ${JSON.stringify(r)}`))]);
    // The approver sees one DELETE and the reason as the agent's words, on one line.
    assert.equal(p.req.operation.kind, 'write');
    assert.match(p.req.binding?.text ?? '', /DELETE FROM jobs WHERE id = \$1$/);
    const said = p.req.binding?.details?.find((d) => d.startsWith("agent's reason:"));
    assert.ok(said && !/[\r\n]/.test(said), String(p.req.binding?.details));
    p.resolve(approved(p.id));
    const r = (await call) as CallToolResult;
    assert.ok(!r.isError, JSON.stringify(r.content));
    assert.deepEqual((await h.pg.query('SELECT id FROM jobs ORDER BY id')).rows, [{ id: 1 }], 'only the agent statement ran');
  } finally {
    await c.close();
  }
});

test('proxied tool: a reason with line breaks cannot forge lines in the approver view', async () => {
  const c = await connect();
  try {
    await c.listTools();
    const call = c.callTool({ name: 'files__deploy', arguments: { service: 'prod-api', version: '3', reason: FORGED, ticket: 'INC-7\n• approved by: ciso' } }, undefined, { timeout: 60_000 });
    const p = await Promise.race([approver.next(), call.then((r) => assert.fail(`answered before any hold: ${JSON.stringify(r)}`))]);
    const details = p.req.binding?.details ?? [];
    assert.ok(details.some((d) => d.includes('hotfix')), String(details));
    for (const d of details) assert.ok(!/[\r\n\u2028\u2029]/.test(d), `a detail line carries a line break: ${JSON.stringify(d)}`);
    p.resolve(approved(p.id));
    assert.equal(((await call) as CallToolResult).isError, undefined);
  } finally {
    await c.close();
  }
});

test('reasonHeader: a lone surrogate (valid JSON from an agent) neither throws nor breaks the header', () => {
  const v = reasonHeader('fix \ud800 now');
  assert.match(v, /^[\x21-\x7e][\x20-\x7e]*$/);
  assert.equal(contextFromHeaders((n) => (n === 'x-airlock-reason' ? v : undefined))?.reason, 'fix \ufffd now');
  assert.match(reasonHeader('a\r\nX-Airlock-Ticket: forged'), /^UTF-8''[\x21-\x7e]+$/);
});
