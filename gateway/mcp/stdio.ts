// `airlock mcp`: MCP over stdio for local agents (Claude Desktop, IDEs), bridged to the gateway's
// Streamable HTTP endpoint with the caller's Airlock token. Enforcement, holds and recording stay
// in the gateway (one store, one policy); this process only relays JSON-RPC messages, progress
// notifications included, and never sees an upstream credential.
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

export interface StdioBridgeOptions {
  url: string;
  token: string;
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream;
  onError?: (err: Error) => void;
}

/** Relays stdio <-> Streamable HTTP until either side closes; resolves then. */
export async function runStdioBridge(o: StdioBridgeOptions): Promise<void> {
  const local = new StdioServerTransport(o.stdin as never, o.stdout as never);
  const remote = new StreamableHTTPClientTransport(new URL(o.url), { requestInit: { headers: { authorization: `Bearer ${o.token}` } } });
  const onError = o.onError ?? (() => undefined);
  let closed = false;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const close = () => {
    if (closed) return;
    closed = true;
    void remote.close().catch(() => undefined);
    void local.close().catch(() => undefined);
    done();
  };
  remote.onmessage = (m) => void local.send(m).catch(onError);
  remote.onerror = onError;
  remote.onclose = close;
  local.onmessage = (m) => void remote.send(m).catch((err: Error) => {
    onError(err);
    // A request the gateway refused (401, unreachable) is answered, so the client does not hang.
    if ('id' in m && 'method' in m) void local.send({ jsonrpc: '2.0', id: m.id, error: { code: -32000, message: `Airlock gateway: ${err.message}` } }).catch(() => undefined);
  });
  local.onerror = onError;
  local.onclose = close;
  await remote.start();
  await local.start();
  // stdin ending means the client is gone.
  (o.stdin ?? process.stdin).once('end', close);
  return finished;
}
