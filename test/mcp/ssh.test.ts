// ssh_exec through Airlock's own SSH listener in front of a real sshd: a simple command runs, a
// denied one is a tool error of kind denied, a held one streams the gateway's stderr notice as
// progress and runs once approved; the listener's host key is pinned.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { approvalBindingKey } from '../../gateway/config/keys.ts';
import { log } from '../../gateway/log.ts';
import { startMcpHttpGateway, type McpHttpGateway } from '../../gateway/mcp/http.ts';
import { PendingCalls } from '../../gateway/mcp/pending.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import { startSshHarness, type SshHarness } from '../ssh/harness.ts';

let h: SshHarness;
let mcp: McpHttpGateway;

async function startMcp(fingerprint: string): Promise<McpHttpGateway> {
  const settings = tokenSettings(h.loaded);
  return startMcpHttpGateway({
    tokens: settings,
    deps: {
      enforcement: { policy: new PolicyEngine(h.loaded.config.policy, h.loaded.config.masking), approver: h.approver, store: h.store, logger: log },
      bindingKey: approvalBindingKey(h.loaded),
      upstreams: [],
      ssh: { host: '127.0.0.1', port: h.gateway.port, hostKeyFingerprint: fingerprint, targets: ['box'] },
      mint: (identity) => mintToken(settings, identity, 60_000),
      maxHoldMs: 30_000,
      pending: new PendingCalls(),
      logger: log,
    },
  });
}

before(async () => {
  h = await startSshHarness({
    rules: [
      { name: 'no-rm', match: { protocols: ['ssh'], functions: ['rm'] }, action: 'deny', reason: 'no deleting' },
      { name: 'restarts-reviewed', match: { protocols: ['ssh'], functions: ['touch'] }, action: 'review', review: { approvers: ['ops'], timeout: '5m' } },
    ],
  });
  mcp = await startMcp(h.gateway.hostKeyFingerprint);
});

after(async () => {
  await mcp?.close();
  await h?.close();
});

async function connect(url = mcp.url): Promise<Client> {
  const c = new Client({ name: 'agent', version: '1' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${await h.token('agent-1')}` } } }));
  return c;
}
const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

describe('ssh_exec', () => {
  it('runs a simple command and returns its output and exit status', async () => {
    const c = await connect();
    try {
      const r = (await c.callTool({ name: 'ssh_exec', arguments: { target: 'box', command: 'echo hello-from-box' } })) as CallToolResult;
      assert.ok(!r.isError, textOf(r));
      assert.deepEqual(r.structuredContent, { exitCode: 0, stdout: 'hello-from-box\n', stderr: '' });
    } finally {
      await c.close();
    }
  });

  it('a denied command is a tool error of kind denied', async () => {
    const c = await connect();
    try {
      const r = (await c.callTool({ name: 'ssh_exec', arguments: { target: 'box', command: 'rm -rf /tmp/nothing-here' } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.equal((r.structuredContent as { error: string }).error, 'denied');
      assert.match(textOf(r), /no-rm/);
    } finally {
      await c.close();
    }
  });

  it('a held command reports the approval notice as progress and runs once approved', async () => {
    const c = await connect();
    try {
      const progress: string[] = [];
      const file = `/tmp/airlock-mcp-ssh-${process.pid}`;
      const call = c.callTool({ name: 'ssh_exec', arguments: { target: 'box', command: `touch ${file}`, reason: 'marker' } }, undefined, { onprogress: (p) => progress.push(p.message ?? ''), timeout: 60_000 });
      const p = await h.approver.next();
      assert.equal(p.req.rule, 'restarts-reviewed');
      assert.ok(p.req.binding?.details?.includes(`agent's reason: "marker" (ssh env)`), String(p.req.binding?.details));
      const deadline = Date.now() + 10_000;
      while (!progress.some((m) => m.includes(p.id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(progress.some((m) => m.includes(p.id)), progress.join('|'));
      p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['bob'], viaGrant: false });
      const r = (await call) as CallToolResult;
      assert.ok(!r.isError, textOf(r));
      assert.equal((r.structuredContent as { exitCode: number }).exitCode, 0);
    } finally {
      await c.close();
    }
  });

  it('refuses to send the token to a listener with another host key', async () => {
    const wrong = await startMcp('SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    const c = await connect(wrong.url);
    try {
      const r = (await c.callTool({ name: 'ssh_exec', arguments: { target: 'box', command: 'echo hi' } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.equal((r.structuredContent as { error: string }).error, 'unavailable');
    } finally {
      await c.close();
      await wrong.close();
    }
  });
});
