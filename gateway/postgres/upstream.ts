// Connects to the real PostgreSQL with the connection's own credentials (the client never sees
// them) and authenticates: trust, cleartext, MD5 and SCRAM-SHA-256 (node-postgres's SCRAM code,
// including SCRAM-SHA-256-PLUS channel binding over TLS). Stops at the first ReadyForQuery and
// returns what the client must see from the startup (ParameterStatus, notices) plus the key.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { PostgresConnectionConfig } from '../config/schema.ts';
import { AsyncReader } from './io.ts';
import { frameOf, parseErrorFields, passwordMessage, saslInitialResponse, saslResponse, sslRequest, startupMessage } from './messages.ts';

interface ScramSession {
  mechanism: string;
  response: string;
}
interface SaslModule {
  startSession(mechanisms: string[], stream?: TLSSocket): ScramSession;
  continueSession(session: ScramSession, password: string, serverData: string, stream?: TLSSocket): Promise<void>;
  finalizeSession(session: ScramSession, serverData: string): void;
}
const sasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as SaslModule;

/** Upstream problems, with a message fit for the client: never the password. */
export class UpstreamError extends Error {
  constructor(
    message: string,
    /** SQLSTATE for the client: 08001 cannot connect, 08006 failed during startup, or the upstream's own code. */
    readonly code: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface UpstreamConnection {
  socket: Socket | TLSSocket;
  /** Bytes received after the first ReadyForQuery (normally none). */
  leftover: Buffer;
  pid: number;
  secret: Buffer;
  /** Raw ParameterStatus ('S') and NoticeResponse ('N') frames to relay to the client. */
  startupFrames: Buffer[];
  tls: boolean;
}

export interface UpstreamOptions {
  conn: PostgresConnectionConfig;
  password: string | undefined;
  /** Startup parameters forwarded from the client (application_name, client_encoding ...). */
  params: Record<string, string>;
  timeoutMs?: number;
}

const MAX_STARTUP_MESSAGE = 1 << 20;

function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user).digest('hex');
  return 'md5' + createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
}

function openSocket(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`timed out after ${timeoutMs}ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

export async function connectUpstream(o: UpstreamOptions): Promise<UpstreamConnection> {
  const { conn } = o;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const where = `upstream database for connection "${conn.name}"`;
  let raw: Socket;
  try {
    raw = await openSocket(conn.host, conn.port, timeoutMs);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const detail = e.code ? `${e.code} ${conn.host}:${conn.port}` : `${conn.host}:${conn.port} (${e.message})`;
    throw new UpstreamError(`${where} is unreachable: ${detail}`, '08001');
  }
  raw.setNoDelay(true);
  raw.setKeepAlive(true, 30_000);
  let socket: Socket | TLSSocket = raw;
  let tls = false;
  const deadline = setTimeout(() => socket.destroy(new Error(`startup timed out after ${timeoutMs}ms`)), timeoutMs);
  try {
    if (conn.tls !== 'disable') {
      const r = new AsyncReader(raw);
      raw.write(sslRequest());
      const answer = (await r.read(1))[0];
      if (r.buffered > 0) throw new UpstreamError(`${where} sent unexpected data after the SSL response`, '08006');
      r.detach();
      if (answer === 0x53 /* S */) {
        socket = await new Promise<TLSSocket>((resolve, reject) => {
          // libpq's sslmode=require semantics: encrypted, server certificate not verified.
          const t = tlsConnect({ socket: raw, servername: isIp(conn.host) ? undefined : conn.host, rejectUnauthorized: false });
          t.once('secureConnect', () => resolve(t));
          t.once('error', reject);
        });
        tls = true;
      } else if (conn.tls === 'require') {
        throw new UpstreamError(`${where} does not support TLS, but the connection requires it (tls: require)`, '08001');
      }
    }
    const reader = new AsyncReader(socket);
    socket.resume();
    socket.write(startupMessage({ user: conn.user, database: conn.database, ...o.params }));
    const startupFrames: Buffer[] = [];
    let pid = 0;
    let secret = Buffer.alloc(0);
    let scram: ScramSession | null = null;
    for (;;) {
      const { type, body } = await reader.readMessage(MAX_STARTUP_MESSAGE, 'upstream');
      const t = String.fromCharCode(type);
      if (t === 'E') {
        const f = parseErrorFields(frameOf(type, body), 0, body.length + 5);
        const authFailed = f.C === '28P01' || f.C === '28000';
        throw new UpstreamError(`${where} refused the connection: ${f.M ?? 'unknown error'}${authFailed ? ' (check the connection credentials in the Airlock config)' : ''}`, '08006');
      }
      if (t === 'R') {
        const kind = body.readInt32BE(0);
        if (kind === 0) continue; // AuthenticationOk
        const password = o.password;
        if (password === undefined) throw new UpstreamError(`${where} asked for a password, but the connection has none configured`, '08006');
        if (kind === 3) socket.write(passwordMessage(password));
        else if (kind === 5) socket.write(passwordMessage(md5Password(conn.user, password, body.subarray(4, 8))));
        else if (kind === 10) {
          const mechanisms = body.toString('utf8', 4).split('\0').filter(Boolean);
          try {
            scram = sasl.startSession(mechanisms, tls ? (socket as TLSSocket) : undefined);
          } catch (err) {
            throw new UpstreamError(`${where}: ${(err as Error).message}`, '08006');
          }
          socket.write(saslInitialResponse(scram.mechanism, scram.response));
        } else if (kind === 11) {
          if (!scram) throw new UpstreamError(`${where} sent SASLContinue out of order`, '08006');
          await sasl.continueSession(scram, password, body.toString('utf8', 4), tls ? (socket as TLSSocket) : undefined);
          socket.write(saslResponse(scram.response));
        } else if (kind === 12) {
          if (!scram) throw new UpstreamError(`${where} sent SASLFinal out of order`, '08006');
          try {
            sasl.finalizeSession(scram, body.toString('utf8', 4));
          } catch (err) {
            throw new UpstreamError(`${where} failed SCRAM verification: ${(err as Error).message}`, '08006');
          }
        } else throw new UpstreamError(`${where} asked for an unsupported authentication method (code ${kind})`, '08006');
        continue;
      }
      if (t === 'S' || t === 'N') startupFrames.push(frameOf(type, body));
      else if (t === 'K') {
        pid = body.readInt32BE(0);
        secret = Buffer.from(body.subarray(4));
      } else if (t === 'Z') {
        clearTimeout(deadline);
        return { socket, leftover: reader.detach(), pid, secret, startupFrames, tls };
      } else if (t === 'v') {
      } else throw new UpstreamError(`${where} sent an unexpected message ${JSON.stringify(t)} during startup`, '08006');
    }
  } catch (err) {
    clearTimeout(deadline);
    socket.destroy();
    if (err instanceof UpstreamError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new UpstreamError(`${where} failed during startup: ${e.code ? `${e.code} ` : ''}${e.message}`, '08006');
  }
}

function isIp(h: string): boolean {
  return /^[\d.]+$/.test(h) || h.includes(':');
}
