// Builders and small parsers for the backend messages Airlock speaks itself. Frontend messages
// sent upstream during startup are built here too (pg-protocol's serializer covers the rest).

export interface PgError {
  severity?: 'ERROR' | 'FATAL' | 'PANIC';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export interface PgNotice {
  severity?: 'NOTICE' | 'WARNING' | 'INFO' | 'LOG' | 'DEBUG';
  code?: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** One message: type byte, length, body. */
export function frameOf(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function frame(type: string, body: Buffer): Buffer {
  return frameOf(type.charCodeAt(0), body);
}

function fields(pairs: Array<[string, string | undefined]>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    parts.push(Buffer.from(k, 'latin1'), Buffer.from(v.replace(/\0/g, ''), 'utf8'), Buffer.from([0]));
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

export function errorResponse(e: PgError): Buffer {
  const severity = e.severity ?? 'ERROR';
  return frame(
    'E',
    fields([
      ['S', severity],
      ['V', severity],
      ['C', e.code],
      ['M', e.message],
      ['D', e.detail],
      ['H', e.hint],
    ]),
  );
}

export function noticeResponse(n: PgNotice): Buffer {
  const severity = n.severity ?? 'NOTICE';
  return frame(
    'N',
    fields([
      ['S', severity],
      ['V', severity],
      ['C', n.code ?? '00000'],
      ['M', n.message],
      ['D', n.detail],
      ['H', n.hint],
    ]),
  );
}

export type TxStatus = 'I' | 'T' | 'E';

export function readyForQuery(status: TxStatus): Buffer {
  return frame('Z', Buffer.from(status, 'latin1'));
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

export function authenticationOk(): Buffer {
  return frame('R', int32(0));
}

export function authenticationCleartextPassword(): Buffer {
  return frame('R', int32(3));
}

export function backendKeyData(pid: number, secret: Buffer): Buffer {
  return frame('K', Buffer.concat([int32(pid), secret]));
}

export function parameterStatus(name: string, value: string): Buffer {
  return frame('S', Buffer.concat([Buffer.from(name + '\0' + value + '\0', 'utf8')]));
}

/** Tells a client asking for a newer minor version (or `_pq_.` options) what we speak: 3.0. */
export function negotiateProtocolVersion(minor: number, unsupported: string[]): Buffer {
  return frame('v', Buffer.concat([int32(minor), int32(unsupported.length), ...unsupported.map((o) => Buffer.from(o + '\0', 'utf8'))]));
}

// ---- frontend messages (gateway -> upstream) ----

export function startupMessage(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [int32(196608)];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(k + '\0' + v + '\0', 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  return Buffer.concat([int32(body.length + 4), body]);
}

export function passwordMessage(password: string): Buffer {
  return frame('p', Buffer.from(password + '\0', 'utf8'));
}

export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const d = Buffer.from(data, 'utf8');
  return frame('p', Buffer.concat([Buffer.from(mechanism + '\0', 'utf8'), int32(d.length), d]));
}

export function saslResponse(data: string): Buffer {
  return frame('p', Buffer.from(data, 'utf8'));
}

export function sslRequest(): Buffer {
  return Buffer.concat([int32(8), int32(80877103)]);
}

export function cancelRequest(pid: number, secret: Buffer): Buffer {
  return Buffer.concat([int32(8 + secret.length + 4), int32(80877102), int32(pid), secret]);
}

export function simpleQuery(sql: string): Buffer {
  return frame('Q', Buffer.from(sql + '\0', 'utf8'));
}

export function parseMessage(name: string, sql: string): Buffer {
  return frame('P', Buffer.concat([Buffer.from(name + '\0' + sql + '\0', 'utf8'), Buffer.from([0, 0])]));
}

export function describePortal(portal: string): Buffer {
  return frame('D', Buffer.from('P' + portal + '\0', 'utf8'));
}

/** Parses the fields of an ErrorResponse / NoticeResponse body. */
export function parseErrorFields(buf: Buffer, start: number, end: number): Record<string, string> {
  const out: Record<string, string> = {};
  let off = start + 5;
  while (off < end && buf[off] !== 0) {
    const code = String.fromCharCode(buf[off]);
    const nul = buf.indexOf(0, off + 1);
    if (nul < 0 || nul >= end) break;
    out[code] = buf.toString('utf8', off + 1, nul);
    off = nul + 1;
  }
  return out;
}

/** Parse with declared parameter types (0 = let the server infer). */
export function parseTyped(name: string, sql: string, types: readonly number[]): Buffer {
  const head = Buffer.from(`${name}\0${sql}\0`, 'utf8');
  const t = Buffer.allocUnsafe(2 + 4 * types.length);
  t.writeInt16BE(types.length, 0);
  types.forEach((oid, i) => t.writeUInt32BE(oid >>> 0, 2 + 4 * i));
  return frame('P', Buffer.concat([head, t]));
}

/** Bind of `statement` into `portal`: each value with its own format code; every result column as text. */
export function bindMessage(portal: string, statement: string, values: ReadonlyArray<{ value: Buffer | null; binary: boolean }>): Buffer {
  const parts: Buffer[] = [Buffer.from(`${portal}\0${statement}\0`, 'utf8'), int16(values.length)];
  for (const v of values) parts.push(int16(v.binary ? 1 : 0));
  parts.push(int16(values.length));
  for (const v of values) {
    if (v.value === null) parts.push(int32(-1));
    else parts.push(int32(v.value.length), v.value);
  }
  parts.push(int16(0));
  return frame('B', Buffer.concat(parts));
}

export function executeMessage(portal: string): Buffer {
  return frame('E', Buffer.concat([Buffer.from(`${portal}\0`, 'utf8'), int32(0)]));
}

export function closeMessage(which: 'S' | 'P', name: string): Buffer {
  return frame('C', Buffer.from(`${which}${name}\0`, 'utf8'));
}

export const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);
export const NO_DATA = Buffer.from([0x6e, 0, 0, 0, 4]);
export const BIND_COMPLETE = Buffer.from([0x32, 0, 0, 0, 4]);

function int16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeInt16BE(n, 0);
  return b;
}
