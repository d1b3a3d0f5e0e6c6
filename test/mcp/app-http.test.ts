// The MCP listener as `airlock gateway` starts it (gateway/app.ts with an `mcp:` block), with
// http_request going through Airlock's own HTTP listener: the response is masked, a denied
// request is a tool error, a held request waits for the approver and runs once approved.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startGateway, type RunningGateway } from '../../gateway/app.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { ManualApprover } from '../support/manual-approver.ts';

let dir: string;
let upstream: Server;
let gw: RunningGateway;
let token: string;
let mcpUrl: string;
const approver = new ManualApprover('local channel');
const received: Array<{ method: string; url: string; body: string }> = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-mcp-app-'));
  upstream = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, owner: 'erin@example.com', path: req.url }));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
store: { sqlite: airlock.db }
identities: [{ name: agent-x, groups: [agents], owner: ann }]
masking: { detectors: [{ detector: email, strategy: redact }] }
policy:
  rules:
    - { name: no-deletes, match: { protocols: [http], methods: [DELETE] }, action: deny, reason: agents do not delete }
    - name: deploys-reviewed
      match: { protocols: [http], methods: [POST], paths: [/deploy] }
      action: review
      review: { approvers: [sre], timeout: 5m }
http:
  listen: { host: 127.0.0.1, port: 0 }
  maxHold: 60s
  services:
    - { name: svc, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}/api" }
mcp:
  listen: { host: 127.0.0.1, port: 0 }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  gw = await startGateway(loaded, { approver });
  const l = gw.listeners.find((x) => x.protocol === 'mcp');
  assert.ok(l, 'airlock gateway starts the MCP listener from the mcp block');
  mcpUrl = `http://${l.host}:${l.port}/mcp`;
  token = await mintToken(tokenSettings(loaded), { name: 'agent-x', groups: ['agents'], owner: 'ann' });
});

after(async () => {
  await gw?.close();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  rmSync(dir, { recursive: true, force: true });
});

async function connect(): Promise<Client> {
  const c = new Client({ name: 'agent', version: '1' });
  await c.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return c;
}

const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');

describe('http_request through the HTTP listener', () => {
  it('is listed and its response is masked by the HTTP gateway', async () => {
    const c = await connect();
    try {
      const names = (await c.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('http_request'), names.join(','));
      assert.ok(!names.includes('postgres_query'), 'no PostgreSQL listener, no postgres_query');
      const r = (await c.callTool({ name: 'http_request', arguments: { connection: 'svc', method: 'GET', path: '/people?limit=1' } })) as CallToolResult;
      assert.ok(!r.isError, textOf(r));
      assert.equal((r.structuredContent as { status: number }).status, 200);
      assert.ok(!textOf(r).includes('erin@example.com'), textOf(r));
      assert.equal(received.at(-1)?.url, '/api/people?limit=1');
    } finally {
      await c.close();
    }
  });

  it('a denied request is a tool error of kind denied and never reaches the service', async () => {
    const c = await connect();
    try {
      const before = received.length;
      const r = (await c.callTool({ name: 'http_request', arguments: { connection: 'svc', method: 'DELETE', path: '/people/1' } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.equal((r.structuredContent as { error: string }).error, 'denied');
      assert.equal(received.length, before);
    } finally {
      await c.close();
    }
  });

  it('a held request runs once approved, with exactly the approved body', async () => {
    const c = await connect();
    try {
      const call = c.callTool({ name: 'http_request', arguments: { connection: 'svc', method: 'POST', path: '/deploy', headers: { 'content-type': 'application/json' }, body: '{"version":"5"}', reason: 'release — 7' } }, undefined, { timeout: 60_000 });
      const p = await approver.next();
      assert.equal(p.req.rule, 'deploys-reviewed');
      // Not Latin-1: it travels RFC 8187-encoded and reaches the approver as written.
      assert.ok(p.req.binding?.details?.includes(`agent's reason: "release — 7" (http header)`), String(p.req.binding?.details));
      assert.ok(!received.some((x) => x.url === '/api/deploy'));
      p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['sre-1'], viaGrant: false });
      const r = (await call) as CallToolResult;
      assert.ok(!r.isError, textOf(r));
      assert.deepEqual(received.filter((x) => x.url === '/api/deploy').map((x) => x.body), ['{"version":"5"}']);
    } finally {
      await c.close();
    }
  });
});
