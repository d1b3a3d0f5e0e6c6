// Connection-level limits of the HTTP/Kubernetes listener (http.listen), PgBouncer-style names:
// maxClientConnections, clientLoginTimeout (the request line and headers), requestTimeout (the
// whole request), maxMessageBytes (a websocket message), maxBufferedBytes (a websocket's queue
// towards a slow peer). The request body cap stays http.maxBodyBytes.
import type { Socket } from 'node:net';
import { parseDuration } from '../config/load.ts';
import type { HttpConfig } from '../config/schema.ts';

export interface ListenerLimits {
  maxClientConnections: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** How often Node checks the two timeouts (its default, 30 s, would let a short timeout run long). */
  checkIntervalMs: number;
  maxMessageBytes: number;
  maxBufferedBytes: number;
}

export function listenerLimits(cfg: HttpConfig): ListenerLimits {
  const l = cfg.listen;
  const requestTimeoutMs = parseDuration(l.requestTimeout);
  // Node requires headersTimeout <= requestTimeout.
  const headersTimeoutMs = Math.min(parseDuration(l.clientLoginTimeout), requestTimeoutMs);
  return {
    maxClientConnections: l.maxClientConnections,
    headersTimeoutMs,
    requestTimeoutMs,
    checkIntervalMs: Math.max(100, Math.min(1_000, Math.floor(headersTimeoutMs / 4))),
    maxMessageBytes: l.maxMessageBytes,
    maxBufferedBytes: l.maxBufferedBytes,
  };
}

/**
 * A connection beyond maxClientConnections. Plain HTTP: a 503 with Retry-After is written at
 * once, before the client has sent anything. TLS: the handshake must finish first, so the first
 * request on it is answered 503 (server.ts). Either way it is closed soon.
 */
export function refuseOverLimit(socket: Socket, plain: boolean, limits: ListenerLimits): void {
  socket.on('error', () => {});
  if (plain) {
    const body = `${JSON.stringify({ error: 'too many connections', reason: `Airlock accepts at most ${limits.maxClientConnections} connections (http.listen.maxClientConnections); retry shortly` })}\n`;
    socket.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  }
  const t = setTimeout(() => socket.destroy(), plain ? 2_000 : Math.min(10_000, limits.headersTimeoutMs));
  t.unref();
  socket.once('close', () => clearTimeout(t));
}
