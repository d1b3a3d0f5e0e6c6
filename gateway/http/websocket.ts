// Websocket upgrades: Airlock terminates the websocket on both sides (it is a party to each
// connection, not a byte pipe), so every frame is seen, counted and, for Kubernetes exec/attach,
// decoded into an asciicast recording. The upstream is dialled first with Airlock's credentials;
// the client's handshake is completed only once the upstream accepted, with the subprotocol the
// upstream chose (v5.channel.k8s.io, v4.channel.k8s.io ...). An upstream refusal (403, 404, 400)
// is relayed to the client as the HTTP response it was.
import http, { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { AsciicastWriter, decodeChannelMessage, type AsciicastHeader } from '../kubernetes/asciicast.ts';
import type { FrameMasker } from './ws-mask.ts';

export interface WsRelayOptions {
  req: http.IncomingMessage;
  socket: Duplex;
  head: Buffer;
  /** ws:// or wss:// URL of the upstream endpoint. */
  upstreamUrl: string;
  headers: Record<string, string | string[]>;
  tls: { ca?: string; cert?: string; key?: string };
  protocols: string[];
  /** Record as asciicast (Kubernetes exec/attach). */
  cast?: { path: string; header: AsciicastHeader };
  /**
   * A mask applies: every upstream message goes through it (a message it cannot mask closes the
   * connection), and an upstream that answers the upgrade with a plain response (a GET served as
   * usual) does not get that body relayed, since it was not masked.
   */
  maskFrame?: FrameMasker;
  /** Largest message either side may send (ws maxPayload; beyond it the connection closes with 1009). Default 16 MiB. */
  maxMessageBytes?: number;
  /** Bytes queued towards one side beyond which the other side is not read until they drain. Default 4 MiB. */
  maxBufferedBytes?: number;
  /** A limit was reached (metrics). */
  onLimit?(limit: 'maxMessageBytes' | 'maxBufferedBytes'): void;
}

export interface WsRelayResult {
  /** The upstream refused the upgrade with this HTTP status (relayed to the client). */
  refusedStatus?: number;
  protocol: string;
  frames: { toClient: number; fromClient: number };
  bytes: { toClient: number; fromClient: number };
  /** Kubernetes channel 3 status document (exit status of exec). */
  status?: string;
  recording?: string;
  error?: string;
  /** Masked field paths / detector hits in relayed messages. */
  masked?: string[];
}

/** Writes a plain HTTP response on a socket that asked to upgrade, then closes it. */
export function refuseUpgrade(socket: Duplex, status: number, body: Record<string, unknown> | string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const text = typeof body === 'string' ? body : JSON.stringify(body) + '\n';
  const ct = typeof body === 'string' ? (headers['content-type'] ?? 'text/plain') : 'application/json';
  const extra = Object.entries(headers)
    .filter(([k]) => k.toLowerCase() !== 'content-type')
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: ${ct}\r\ncontent-length: ${Buffer.byteLength(text)}\r\n${extra}connection: close\r\n\r\n${text}`);
}

function closeCode(code: number): number {
  // 1005/1006/1015 are reserved for "no code"/abnormal and may not be sent.
  return code === 1005 || code === 1006 || code === 1015 || code < 1000 || code >= 5000 ? 1000 : code;
}

function toBytes(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/**
 * Sends on `to` what arrived from `from`, pausing `from` while more than `max` bytes sent to `to`
 * are not yet written out (a slow reader cannot make the gateway queue the other side's stream).
 */
class Backpressure {
  private queued = 0;
  private paused = false;

  constructor(
    private readonly from: WebSocket,
    private readonly max: number,
    private readonly onLimit: () => void,
  ) {}

  send(to: WebSocket, data: Buffer, binary: boolean): void {
    this.queued += data.length;
    to.send(data, { binary }, () => {
      this.queued -= data.length;
      if (this.paused && this.queued <= this.max / 2) {
        this.paused = false;
        this.from.resume();
      }
    });
    if (!this.paused && this.queued > this.max) {
      this.paused = true;
      this.onLimit();
      this.from.pause();
    }
  }
}

const isTooLarge = (e: Error) => (e as Error & { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';

export function relayWebSocket(o: WsRelayOptions): Promise<WsRelayResult> {
  const maxMessageBytes = o.maxMessageBytes ?? 16 * 1024 * 1024;
  const maxBufferedBytes = o.maxBufferedBytes ?? 4 * 1024 * 1024;
  return new Promise((resolve) => {
    const result: WsRelayResult = { protocol: '', frames: { toClient: 0, fromClient: 0 }, bytes: { toClient: 0, fromClient: 0 } };
    let settled = false;
    let cast: AsciicastWriter | undefined;
    // The upstream accepted the upgrade (a subprotocol may or may not have been chosen).
    let opened = false;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      if (error && !result.error) result.error = error;
      if (cast) {
        result.recording = cast.path;
        void cast.close().then(() => resolve(result));
      } else resolve(result);
    };

    const upstream = new WebSocket(o.upstreamUrl, o.protocols, {
      headers: o.headers as Record<string, string>,
      ...o.tls,
      rejectUnauthorized: true,
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      maxPayload: maxMessageBytes,
    });
    const clientGone = () => {
      if (upstream.readyState === WebSocket.CONNECTING) upstream.terminate();
      finish('the client went away before the upstream answered');
    };
    o.socket.once('close', clientGone);

    upstream.once('unexpected-response', (_req: http.ClientRequest, res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        o.socket.off('close', clientGone);
        const status = res.statusCode ?? 502;
        if (o.maskFrame) {
          // The body was not masked (a plain GET answered as usual would be the object in clear).
          result.refusedStatus = 502;
          refuseUpgrade(o.socket, 502, { error: 'bad gateway', reason: `the upstream answered the websocket upgrade with HTTP ${status} instead of switching protocols; its body is withheld because this response must be masked` });
        } else {
          result.refusedStatus = status;
          refuseUpgrade(o.socket, status, Buffer.concat(chunks).toString('utf8'), { 'content-type': String(res.headers['content-type'] ?? 'text/plain') });
        }
        finish(`the upstream refused the websocket upgrade with HTTP ${status}`);
      });
    });
    upstream.once('error', (err) => {
      // Before the handshake completed (refused connection, TLS failure, handshake timeout).
      if (!opened && !settled) {
        o.socket.off('close', clientGone);
        refuseUpgrade(o.socket, 502, { error: 'bad gateway', reason: `websocket to the upstream failed: ${err.message}` });
        finish(`upstream websocket failed: ${err.message}`);
      }
    });

    upstream.once('open', () => {
      opened = true;
      o.socket.off('close', clientGone);
      result.protocol = upstream.protocol;
      const base64 = upstream.protocol.startsWith('base64.');
      const k8s = upstream.protocol.endsWith('channel.k8s.io');
      if (o.cast && k8s) cast = new AsciicastWriter(o.cast.path, o.cast.header);
      // Until the client's handshake completes, the upstream is paused; what it already sent is
      // kept (in order) and relayed first, and an early close or error is passed on then.
      upstream.pause();
      let client: WebSocket | undefined;
      const early: Array<[Buffer, boolean]> = [];
      let earlyEnd: { code: number; reason: Buffer; error?: string } | undefined;
      const buffered = () => o.onLimit?.('maxBufferedBytes');
      const toClient = new Backpressure(upstream, maxBufferedBytes, buffered);
      const fail = (err: unknown) => {
        client?.terminate();
        upstream.terminate();
        finish(`websocket relay failed: ${(err as Error).message}`);
      };
      // A failure while handling one message ends this connection, never the process.
      const contained =
        <A extends unknown[]>(fn: (...a: A) => void) =>
        (...a: A): void => {
          try {
            fn(...a);
          } catch (err) {
            fail(err);
          }
        };
      upstream.on('message', contained((data: RawData, binary: boolean) => {
        let b = toBytes(data);
        let isBinary = binary;
        if (o.maskFrame) {
          const r = o.maskFrame(b, isBinary, upstream.protocol);
          if ('error' in r) {
            if (client) client.close(1008, 'airlock: message cannot be masked');
            else earlyEnd = { code: 1008, reason: Buffer.from('airlock: message cannot be masked'), error: r.error };
            upstream.terminate();
            finish(r.error);
            return;
          }
          b = r.data;
          isBinary = r.isBinary;
          if (r.masked.length > 0) {
            result.masked ??= [];
            for (const x of r.masked) if (result.masked.length < 200 && !result.masked.includes(x)) result.masked.push(x);
          }
        }
        result.frames.toClient++;
        result.bytes.toClient += b.length;
        if (cast) {
          const m = decodeChannelMessage(b, base64);
          if ((m?.channel === 1 || m?.channel === 2) && 'data' in m) cast.output(m.data, m.channel === 1 ? 'stdout' : 'stderr');
          else if (m?.channel === 3 && 'status' in m) result.status = m.status;
        }
        if (!client) early.push([b, isBinary]);
        else if (client.readyState === WebSocket.OPEN) toClient.send(client, b, isBinary);
      }));
      upstream.on('ping', (d) => client?.readyState === WebSocket.OPEN && client.ping(d));
      upstream.on('close', (code, reason) => {
        if (!client) earlyEnd ??= { code, reason };
        else if (client.readyState === WebSocket.OPEN) client.close(closeCode(code), reason);
        finish();
      });
      upstream.on('error', (e) => {
        if (isTooLarge(e)) {
          o.onLimit?.('maxMessageBytes');
          // ws already closed the upstream with 1009; the client is told the same.
          if (client?.readyState === WebSocket.OPEN) client.close(1009, 'airlock: message too large');
          else if (!client) earlyEnd = { code: 1009, reason: Buffer.from('airlock: message too large') };
          finish(`upstream websocket error: ${e.message}`);
          return;
        }
        if (client) client.terminate();
        else earlyEnd = { code: 1011, reason: Buffer.from('airlock: upstream websocket error') };
        finish(`upstream websocket error: ${e.message}`);
      });
      const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: maxMessageBytes, handleProtocols: () => upstream.protocol || false });
      wss.handleUpgrade(o.req, o.socket, o.head, (c) => {
        client = c;
        const toUpstream = new Backpressure(c, maxBufferedBytes, buffered);
        c.on('message', contained((data: RawData, isBinary: boolean) => {
          const b = toBytes(data);
          result.frames.fromClient++;
          result.bytes.fromClient += b.length;
          if (cast) {
            const m = decodeChannelMessage(b, base64);
            if (m?.channel === 0 && 'data' in m) cast.input(m.data);
            else if (m?.channel === 4 && 'width' in m) cast.resize(m.width, m.height);
          }
          if (upstream.readyState === WebSocket.OPEN) toUpstream.send(upstream, b, isBinary);
        }));
        c.on('ping', (d) => upstream.readyState === WebSocket.OPEN && upstream.ping(d));
        c.on('close', (code, reason) => {
          if (upstream.readyState === WebSocket.OPEN) upstream.close(closeCode(code), reason);
          else upstream.terminate();
          finish();
        });
        c.on('error', (e) => {
          if (isTooLarge(e)) o.onLimit?.('maxMessageBytes');
          upstream.terminate();
          finish(`client websocket error: ${e.message}`);
        });
        for (const [b, isBinary] of early.splice(0)) toClient.send(c, b, isBinary);
        if (earlyEnd) c.close(closeCode(earlyEnd.code), earlyEnd.reason);
        else upstream.resume();
      });
    });
  });
}
