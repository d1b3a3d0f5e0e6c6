// The MCP Streamable HTTP endpoint (`/mcp`). Every request carries an Airlock bearer token
// (MCP authorization spec: OAuth 2.1 resource server); without a valid one the answer is 401 with
// `WWW-Authenticate: Bearer resource_metadata=...` pointing at `/.well-known/oauth-protected-resource`.
// A session belongs to the identity that opened it: a request for it with another identity's
// token is refused, so a session id alone is worth nothing.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { TokenError, verifyToken, type TokenSettings } from '../auth/tokens.ts';
import type { Identity } from '../policy/operation.ts';
import { McpSession, type McpGatewayDeps } from './session.ts';

export interface McpHttpOptions {
  deps: McpGatewayDeps;
  tokens: TokenSettings;
  host?: string;
  port?: number;
  /** Public URL of the endpoint (protected-resource metadata `resource`). */
  resource?: string;
  authorizationServers?: string[];
}

export interface McpHttpGateway {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

const MAX_BODY = 4 * 1024 * 1024;

/** Who a session belongs to: a token for the same name with other groups or owner is someone else. */
function identityKey(i: Identity): string {
  return JSON.stringify([i.name, [...i.groups].sort(), i.owner ?? null]);
}
const METADATA_PATH = '/.well-known/oauth-protected-resource';

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new Error('request body too large');
    chunks.push(c);
  }
  const s = Buffer.concat(chunks).toString('utf8');
  return s ? JSON.parse(s) : undefined;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

export async function startMcpHttpGateway(o: McpHttpOptions): Promise<McpHttpGateway> {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; session: McpSession; identity: string }>();
  let base = '';
  const resource = () => o.resource ?? `${base}/mcp`;
  const metadataUrl = () => `${new URL(resource()).origin}${METADATA_PATH}`;

  const unauthorized = (res: ServerResponse, error: string, description: string) =>
    json(res, 401, { error, error_description: description }, { 'www-authenticate': `Bearer resource_metadata="${metadataUrl()}", error="${error}", error_description="${description.replace(/"/g, "'")}"` });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === METADATA_PATH || url.pathname === `${METADATA_PATH}/mcp`) {
      return json(res, 200, { resource: resource(), authorization_servers: o.authorizationServers ?? [], bearer_methods_supported: ['header'], resource_name: 'Airlock MCP gateway' });
    }
    if (url.pathname !== '/mcp') return json(res, 404, { error: 'not_found' });
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(auth);
    if (!m) return unauthorized(res, 'invalid_request', 'an Airlock bearer token is required (airlock token <identity>)');
    let who: Identity & { expiresAt: Date };
    try {
      who = await verifyToken(o.tokens, m[1]);
    } catch (err) {
      return unauthorized(res, 'invalid_token', err instanceof TokenError ? err.message : 'invalid token');
    }
    const body = req.method === 'POST' ? await readJson(req) : undefined;
    const sid = req.headers['mcp-session-id'];
    if (typeof sid === 'string') {
      const s = sessions.get(sid);
      if (!s) return json(res, 404, { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
      if (s.identity !== identityKey(who)) return json(res, 403, { jsonrpc: '2.0', error: { code: -32003, message: 'this MCP session belongs to another identity' }, id: null });
      return s.transport.handleRequest(req, res, body);
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) return json(res, 400, { jsonrpc: '2.0', error: { code: -32000, message: 'send initialize first (no Mcp-Session-Id)' }, id: null });
    let session: McpSession;
    try {
      session = new McpSession(o.deps, { identity: { name: who.name, groups: who.groups, owner: who.owner }, tokenExpiresAt: who.expiresAt, clientAddress: req.socket.remoteAddress ?? '' });
    } catch (err) {
      // No audit trail, no access.
      return json(res, 503, { jsonrpc: '2.0', error: { code: -32002, message: `Airlock: ${(err as Error).message}` }, id: null });
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, { transport, session, identity: identityKey(who) }),
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
      void session.close('client closed the MCP session');
    };
    session.enforce.onTokenExpiry(() => void transport.close());
    await session.server.connect(transport);
    await transport.handleRequest(req, res, body);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      o.deps.logger.warn({ err }, 'MCP request failed');
      if (!res.headersSent) json(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: err.message }, id: null });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = o.host ?? '127.0.0.1';
  base = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
  return {
    host,
    port: addr.port,
    url: `${base}/mcp`,
    async close() {
      for (const s of sessions.values()) await s.transport.close().catch(() => undefined);
      sessions.clear();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
