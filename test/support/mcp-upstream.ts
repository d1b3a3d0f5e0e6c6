// A small real upstream MCP server (the SDK's McpServer over Streamable HTTP, stateless) for the
// MCP gateway tests: `echo` returns what it was sent, `delete_file` and `deploy` record their
// calls; the `deploy` description can be changed while running (a tool that changes under a
// session that already listed it).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

export interface UpstreamMcp {
  url: string;
  calls: Array<{ tool: string; args: Record<string, unknown> }>;
  deployDescription: string;
  /** Authorization headers the upstream received. */
  authorizations: string[];
  close(): Promise<void>;
}

export async function startUpstreamMcp(): Promise<UpstreamMcp> {
  const state: UpstreamMcp = { url: '', calls: [], deployDescription: 'Deploy a service version', authorizations: [], close: async () => {} };
  const build = () => {
    const s = new McpServer({ name: 'files-upstream', version: '1' });
    s.registerTool('echo', { description: 'Echo the text back', inputSchema: { text: z.string() } }, async ({ text }) => {
      state.calls.push({ tool: 'echo', args: { text } });
      return { content: [{ type: 'text', text: `echo: ${text}` }] };
    });
    s.registerTool('delete_file', { description: 'Delete a file', inputSchema: { path: z.string() } }, async ({ path }) => {
      state.calls.push({ tool: 'delete_file', args: { path } });
      return { content: [{ type: 'text', text: `deleted ${path}` }] };
    });
    s.registerTool('deploy', { description: state.deployDescription, inputSchema: { service: z.string(), version: z.string() } }, async ({ service, version }) => {
      state.calls.push({ tool: 'deploy', args: { service, version } });
      return { content: [{ type: 'text', text: `deployed ${service}@${version}` }] };
    });
    return s;
  };
  const http: Server = createServer(async (req, res) => {
    if (req.headers.authorization) state.authorizations.push(req.headers.authorization);
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
    const server = build();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  state.url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`;
  state.close = async () => {
    http.closeAllConnections();
    await new Promise<void>((r) => http.close(() => r()));
  };
  return state;
}
