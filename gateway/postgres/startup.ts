// The client side of connection startup: SSL/GSS negotiation, cancel requests, the v3
// StartupMessage and cleartext-password authentication where the password is an Airlock token.
// Errors here are FATAL ErrorResponses followed by a close, as PostgreSQL does.
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import { verifyToken, TokenError, type TokenSettings } from '../auth/tokens.ts';
import type { PostgresConnectionConfig } from '../config/schema.ts';
import type { Identity } from '../policy/operation.ts';
import { sendCancel, type CancelRegistry } from './cancel.ts';
import { ProtocolError } from './frames.ts';
import { AsyncReader } from './io.ts';
import { authenticationCleartextPassword, errorResponse, negotiateProtocolVersion, type PgError } from './messages.ts';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
/** PostgreSQL's own cap on startup packets. */
const MAX_STARTUP_PACKET = 10_000;

/**
 * The upstream session always runs with client_encoding UTF8, fixed by Airlock at upstream startup:
 * the policy parses the bytes as UTF-8, so the server must read the same bytes the same way. In
 * other encodings (SJIS, BIG5, GBK ...) a multibyte character can end in a quote or backslash byte,
 * and the two parsers would disagree about where a string literal ends.
 */
export const UPSTREAM_CLIENT_ENCODING = 'UTF8';

/** PostgreSQL's own normalisation of encoding names: case and non-alphanumerics are ignored. */
function normalizeEncoding(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, '');
}

/** UTF8 and its aliases (`utf-8`, `unicode`), as PostgreSQL spells them. */
export function isUtf8Encoding(name: string): boolean {
  const n = normalizeEncoding(name);
  return n === 'utf8' || n === 'unicode';
}

/**
 * What a client may ask for as client_encoding at startup: UTF8 (any alias), or SQL_ASCII, which
 * libpq's `client_encoding=auto` picks in a C locale and which is byte-identical to UTF8 for the
 * ASCII such a client sends (anything else is refused later as invalid UTF-8 query text).
 */
function acceptableStartupEncoding(name: string): boolean {
  return isUtf8Encoding(name) || normalizeEncoding(name) === 'sqlascii';
}

/** `-c client_encoding=X` / `--client-encoding=X` inside the startup `options` parameter. */
function encodingInOptions(options: string): string | undefined {
  const m = /(?:^|\s)(?:-c\s*|--)client[_-]encoding\s*=\s*(\S+)/i.exec(options);
  return m ? m[1].replace(/^['"]|['"]$/g, '') : undefined;
}

/**
 * Refuses a startup whose requested client encoding is not UTF8 (from `client_encoding`, which is
 * where libpq puts PGCLIENTENCODING, or from `options`), with an error that says why.
 */
export function checkStartupEncoding(params: Record<string, string>): void {
  const asked = [params.client_encoding, params.options === undefined ? undefined : encodingInOptions(params.options)];
  for (const enc of asked) {
    if (enc !== undefined && !acceptableStartupEncoding(enc)) {
      throw fatal('22023', `client_encoding ${enc} is not supported through Airlock: sessions always use UTF8`, {
        hint: 'connect with client_encoding=UTF8 (unset PGCLIENTENCODING); Airlock checks the statement text as UTF-8 and the server must read it the same way',
      });
    }
  }
}

/** A startup failure to report to the client as a FATAL error. */
export class StartupError extends Error {
  constructor(readonly pg: PgError) {
    super(pg.message);
    this.name = 'StartupError';
  }
}

export interface ClientTls {
  context: SecureContext;
  required: boolean;
}

export interface AuthContext {
  tokens: TokenSettings;
  connections: readonly PostgresConnectionConfig[];
}

export interface AuthenticatedClient {
  kind: 'session';
  socket: Socket | TLSSocket;
  leftover: Buffer;
  tls: boolean;
  identity: Identity;
  tokenExpiresAt: Date;
  /** jti of the login token (revocable by id). */
  tokenId?: string;
  connection: PostgresConnectionConfig;
  /** Every startup parameter the client sent (user, database included). */
  params: Record<string, string>;
}

export type StartupResult = AuthenticatedClient | { kind: 'cancel' } | { kind: 'closed'; reason: string };

function fatal(code: string, message: string, extra: Partial<PgError> = {}): StartupError {
  return new StartupError({ severity: 'FATAL', code, message, ...extra });
}

/** Writes a FATAL error (if the socket is still writable) and closes. */
export function refuse(socket: Duplex, e: PgError): void {
  if (socket.writable) socket.end(errorResponse({ ...e, severity: e.severity ?? 'FATAL' }));
  setTimeout(() => socket.destroy(), 1000).unref();
}

function upgrade(socket: Socket, context: SecureContext): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = new TLSSocket(socket, { isServer: true, secureContext: context });
    t.once('secure', () => {
      t.off('error', reject);
      resolve(t);
    });
    t.once('error', reject);
  });
}

/**
 * Runs startup on a fresh client connection up to (not including) AuthenticationOk, which the
 * caller sends once the upstream is connected. Throws StartupError for the client to see.
 */
export interface StartupOptions {
  tls?: ClientTls;
  cancels: CancelRegistry;
  auth: AuthContext;
  /** Called with every refusal, for the audit log. */
  onRefused?: (e: PgError, params: Record<string, string> | undefined) => void;
}

export async function clientStartup(raw: Socket, opts: StartupOptions): Promise<StartupResult> {
  const state: { socket: Socket | TLSSocket; params?: Record<string, string> } = { socket: raw };
  try {
    return await startup(raw, opts, state);
  } catch (err) {
    let pg: PgError | undefined;
    if (err instanceof StartupError) pg = err.pg;
    else if (err instanceof ProtocolError) pg = { severity: 'FATAL', code: '08P01', message: err.message };
    if (pg) {
      opts.onRefused?.(pg, state.params);
      refuse(state.socket, pg);
      return { kind: 'closed', reason: pg.message };
    }
    state.socket.destroy();
    raw.destroy();
    return { kind: 'closed', reason: (err as Error).message };
  }
}

async function startup(raw: Socket, opts: StartupOptions, state: { socket: Socket | TLSSocket; params?: Record<string, string> }): Promise<StartupResult> {
  let socket: Socket | TLSSocket = raw;
  let tls = false;
  let reader = new AsyncReader(socket);
  let params: Record<string, string> | undefined;
  while (!params) {
    const len = (await reader.read(4)).readInt32BE(0);
    if (len < 8 || len > MAX_STARTUP_PACKET) throw fatal('08P01', `invalid startup packet length ${len}`);
    const body = await reader.read(len - 4);
    const code = body.readInt32BE(0);
    if (code === SSL_REQUEST) {
      if (tls) throw fatal('08P01', 'SSLRequest received on an encrypted connection');
      if (!opts.tls) {
        socket.write('N');
        continue;
      }
      // Bytes already sent after SSLRequest would bypass TLS (CVE-2021-23214): refuse them.
      if (reader.buffered > 0) throw fatal('08P01', 'received unencrypted data after SSL request');
      reader.detach();
      socket.write('S');
      socket = await upgrade(raw, opts.tls.context);
      state.socket = socket;
      tls = true;
      reader = new AsyncReader(socket);
      socket.resume();
      continue;
    }
    if (code === GSSENC_REQUEST) {
      socket.write('N');
      continue;
    }
    if (code === CANCEL_REQUEST) {
      if (body.length < 12) throw fatal('08P01', 'invalid cancel request');
      const key = opts.cancels.lookup(body.readInt32BE(4), body.subarray(8));
      reader.detach();
      socket.destroy();
      if (key) await sendCancel(key);
      return { kind: 'cancel' };
    }
    const major = code >>> 16;
    const minor = code & 0xffff;
    if (major !== 3) throw fatal('08P01', `unsupported frontend protocol ${major}.${minor}: Airlock supports protocol 3.0`);
    params = {};
    state.params = params;
    const unsupportedOptions: string[] = [];
    let off = 4;
    while (off < body.length && body[off] !== 0) {
      const k = body.indexOf(0, off);
      const v = k < 0 ? -1 : body.indexOf(0, k + 1);
      if (k < 0 || v < 0) throw fatal('08P01', 'invalid startup packet layout: expected terminator as last byte');
      const name = body.toString('utf8', off, k);
      const value = body.toString('utf8', k + 1, v);
      if (name.startsWith('_pq_.')) unsupportedOptions.push(name);
      else params[name] = value;
      off = v + 1;
    }
    if (minor > 0 || unsupportedOptions.length > 0) socket.write(negotiateProtocolVersion(0, unsupportedOptions));
  }

  if (opts.tls?.required && !tls) {
    throw fatal('28000', 'TLS is required by this Airlock gateway', { hint: 'connect with sslmode=require (or verify-full)' });
  }
  const user = params.user;
  const database = params.database || user;
  if (!user) throw fatal('28000', 'no user name specified in the startup packet', { hint: 'set user=<your identity>' });
  if (params.replication && params.replication !== 'false' && params.replication !== 'off' && params.replication !== '0') {
    throw fatal('28000', 'replication connections are not supported through Airlock');
  }

  checkStartupEncoding(params);

  socket.write(authenticationCleartextPassword());
  const msg = await reader.readMessage(MAX_STARTUP_PACKET, 'frontend');
  if (msg.type !== 0x70 /* p */) throw fatal('08P01', `expected a password message, got message type ${String.fromCharCode(msg.type)}`);
  const nul = msg.body.indexOf(0);
  const token = msg.body.toString('utf8', 0, nul < 0 ? msg.body.length : nul);

  let verified: Identity & { expiresAt: Date; tokenId?: string };
  try {
    verified = await verifyToken(opts.auth.tokens, token);
  } catch (err) {
    if (err instanceof TokenError) throw fatal('28P01', `Airlock token rejected for user "${user}": ${err.message}`);
    throw err;
  }
  if (verified.name !== user) {
    throw fatal('28P01', `Airlock token was issued to "${verified.name}", not to user "${user}"`, { hint: `connect with user=${verified.name}, or mint a token for ${user}` });
  }
  const connection = opts.auth.connections.find((c) => c.name === database);
  if (!connection) throw fatal('3D000', `connection "${database}" is not configured in Airlock`, { hint: 'dbname must be the name of a connection in the Airlock config' });
  const allow = connection.allow;
  const open = allow.identities.length === 0 && allow.groups.length === 0;
  if (!open && !allow.identities.includes(verified.name) && !verified.groups.some((g) => allow.groups.includes(g))) {
    throw fatal('28000', `identity "${verified.name}" is not allowed to use connection "${connection.name}"`);
  }
  const identity: Identity = { name: verified.name, groups: verified.groups, ...(verified.owner ? { owner: verified.owner } : {}) };
  return { kind: 'session', socket, leftover: reader.detach(), tls, identity, tokenExpiresAt: verified.expiresAt, ...(verified.tokenId ? { tokenId: verified.tokenId } : {}), connection, params };
}

