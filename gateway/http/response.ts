// Relays an upstream response to the client, masking it when the decision asks for it.
//
// - Nothing to mask: status, headers and body stream through untouched (no buffering, so
//   `kubectl get -w` and `logs -f` arrive as they are produced).
// - JSON (`application/json`, `*+json`): decompressed (gzip, deflate, br), parsed within a bounded
//   buffer, masked, and sent uncompressed with a correct content-length (content-encoding, etag
//   and content-md5 dropped, since the bytes changed).
// - Streams (Kubernetes watch, `;stream=watch`, `logs -f`): masked one line at a time (JSON events
//   or text lines) and flushed as each arrives.
// - text/plain and text/event-stream: content detectors only, bounded buffer, and only when no
//   field mask applies (then only a body that parses as JSON is masked and relayed).
// - No content type: relayed only if the body parses as JSON (then masked as JSON).
// - Anything else (csv, xml, html, JavaScript/JSONP, yaml, protobuf, images ...): refused (502,
//   `unmaskable response`, naming the rules) while a mask applies; the gateway asks for JSON when
//   it must mask, so this only happens when the client or upstream insists on another format.
// Anything that must be masked but cannot be (too large, unparseable, unknown encoding) fails
// closed with 502 and nothing of the body is sent.
import type http from 'node:http';
import { Transform, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { JsonMasker } from './json-mask.ts';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authenticate']);

export interface RelayResult {
  status: number;
  /** Body bytes sent to the client. */
  bytes: number;
  masked: string[];
  error?: string;
}

export function responseHeaders(src: http.IncomingHttpHeaders, drop: string[] = []): http.OutgoingHttpHeaders {
  return copyHeaders(src, drop.length ? new Set(drop) : undefined, undefined);
}

/** Dropped from a masked response: the body changes (length, encoding, validators) and is always whole. */
const MASKED_DROP = new Set(['content-length', 'content-encoding', 'etag', 'content-md5', 'content-range', 'accept-ranges']);

/** `src` minus hop-by-hop headers and `drop`, with `extra` over it, in one new object. */
function copyHeaders(src: http.IncomingHttpHeaders, drop: ReadonlySet<string> | undefined, extra: http.OutgoingHttpHeaders | undefined): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const k in src) {
    const v = src[k];
    if (v === undefined || HOP_BY_HOP.has(k) || drop?.has(k)) continue;
    out[k] = v;
  }
  if (extra) for (const k in extra) out[k] = extra[k];
  return out;
}

/** Structural headers whose values are never data (not run through detectors). */
const STRUCTURAL = new Set(['content-type', 'content-length', 'date', 'cache-control', 'expires', 'last-modified', 'vary', 'server', 'age', 'pragma']);

/** Detectors over every other response header value (a `Location` or `X-User-Email` carries data too). */
function maskHeaderValues(headers: http.OutgoingHttpHeaders, m: JsonMasker): string[] {
  const hits: string[] = [];
  // Only detectors read header values (maskText with none changes nothing).
  if (!m.hasDetectors) return hits;
  for (const [k, v] of Object.entries(headers)) {
    if (STRUCTURAL.has(k) || v === undefined || typeof v === 'number') continue;
    const mask = (x: string) => {
      const r = m.maskText(x);
      for (const h of r.masked) hits.push(`${h}@header:${k}`);
      return r.value;
    };
    headers[k] = Array.isArray(v) ? v.map(mask) : mask(v);
  }
  return hits;
}

function decoder(encoding: string | undefined): Transform | null | undefined {
  const e = (encoding ?? '').trim().toLowerCase();
  if (e === '' || e === 'identity') return null;
  if (e === 'gzip' || e === 'x-gzip') return zlib.createGunzip();
  if (e === 'deflate') return zlib.createInflate();
  if (e === 'br') return zlib.createBrotliDecompress();
  return undefined;
}

/** Sends a JSON error (used for fail-closed paths); no-op when headers already went out. */
export function sendJson(res: http.ServerResponse, status: number, body: Record<string, unknown>, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function countBytes(res: http.ServerResponse): { bytes: number } {
  const counter = { bytes: 0 };
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk === 'string') counter.bytes += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) counter.bytes += chunk.length;
    return write(chunk, ...rest);
  }) as typeof res.write;
  return counter;
}

/** How a response body that must be masked is handled. */
type MaskFormat = 'json' | 'text' | 'sniff' | 'refuse';

/**
 * JSON (and NDJSON) is masked; plain text gets detectors only when no field mask applies (a field
 * cannot be found in text); a body without a content type, or text while fields apply, is masked
 * only if it parses as JSON; every other type (csv, xml, html, javascript/JSONP, yaml, protobuf,
 * images, octet-stream ...) cannot be masked and is refused.
 */
export function maskFormat(contentType: string, hasFields: boolean): MaskFormat {
  const ct = contentType.toLowerCase();
  const base = (ct.split(';')[0] ?? '').trim();
  // Detectors and the JSON parser read UTF-8. Text in UTF-16/32 (or any charset that is not
  // UTF-8/ASCII) would pass them unrecognised and be decoded by the client: refuse it.
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/.exec(ct)?.[1];
  if (charset !== undefined && !['utf-8', 'utf8', 'us-ascii', 'ascii'].includes(charset)) return 'refuse';
  if (base === '') return 'sniff';
  if (/(nd|x-ld|l)json$|json-seq$/.test(base) || base === 'application/json' || base.endsWith('+json') || base === 'text/json') return 'json';
  if (base === 'text/plain' || base === 'text/event-stream') return hasFields ? 'sniff' : 'text';
  return 'refuse';
}

export interface RelayOptions {
  maxBytes: number;
  stream: boolean;
  extraHeaders?: http.OutgoingHttpHeaders;
  /** Shapes Airlock's own error bodies (Kubernetes clients expect a Status object). */
  errorBody?: (status: number, body: Record<string, unknown>) => Record<string, unknown>;
  /** A reason to refuse a parsed document the masker cannot fully cover (e.g. a Kubernetes Table while field masks apply). */
  refuseDocument?: (doc: unknown) => string | undefined;
}

export function relayResponse(proxyRes: http.IncomingMessage, res: http.ServerResponse, masker: JsonMasker | undefined, opts: RelayOptions): Promise<RelayResult> {
  const status = proxyRes.statusCode ?? 502;
  const ct = String(proxyRes.headers['content-type'] ?? '').toLowerCase();
  const noBody = status === 204 || status === 304 || res.req?.method === 'HEAD';
  const needsMask = masker !== undefined && !masker.empty && !noBody;
  const format: MaskFormat = needsMask ? maskFormat(ct, masker.hasFields) : 'text';
  const ndjson = /(nd|x-ld|l)json\b|json-seq/.test(ct);

  return new Promise<RelayResult>((resolve) => {
    let settled = false;
    const fail = (error: string, kind = 'bad gateway'): void => {
      if (settled) return;
      settled = true;
      proxyRes.resume();
      const body = { error: kind, ...(masker && masker.rules.length ? { rule: masker.rules.join(', ') } : {}), reason: error };
      sendJson(res, 502, opts.errorBody ? opts.errorBody(502, body) : body);
      resolve({ status: 502, bytes: 0, masked: [], error });
    };
    const done = (r: RelayResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };

    if (!needsMask) {
      const plain = copyHeaders(proxyRes.headers, undefined, opts.extraHeaders);
      // No body (HEAD, 204, 304), but the headers still carry data when a mask applies.
      if (masker && !masker.empty) {
        try {
          maskHeaderValues(plain, masker);
        } catch (err) {
          return fail(`the response headers could not be masked: ${(err as Error).message}`);
        }
      }
      res.writeHead(status, plain);
      // Relayed by hand rather than piped (fewer listeners per response), with backpressure.
      let bytes = 0;
      const end = (error?: string) => done({ status, bytes, masked: [], ...(error ? { error } : {}) });
      proxyRes.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (!res.write(chunk)) proxyRes.pause();
      });
      res.on('drain', () => proxyRes.resume());
      proxyRes.once('end', () => res.end());
      res.once('finish', () => end());
      res.once('close', () => {
        if (!res.writableFinished) {
          proxyRes.destroy();
          end('client closed the connection before the response ended');
        }
      });
      proxyRes.once('error', (e) => {
        res.destroy();
        end(`upstream response failed: ${e.message}`);
      });
      return;
    }
    const m = masker!;
    if (status === 206) {
      // Range is stripped when masking; a partial document could start below a field path.
      proxyRes.destroy();
      return fail('the upstream answered with a partial body (206), which cannot be masked; the response was withheld', 'unmaskable response');
    }
    if (format === 'refuse') {
      proxyRes.destroy();
      return fail(`the upstream answered ${ct.split(';')[0] || 'without a content type'}, which Airlock cannot mask, on a request whose response must be masked; the response was withheld (ask for application/json)`, 'unmaskable response');
    }
    const dec = decoder(proxyRes.headers['content-encoding'] as string | undefined);
    if (dec === undefined) return fail(`unsupported content-encoding ${String(proxyRes.headers['content-encoding'])} on a response that must be masked`);
    const body: Readable = dec ? proxyRes.pipe(dec) : proxyRes;
    body.on('error', (e) => fail(`could not decode the upstream response: ${e.message}`));
    const headers = copyHeaders(proxyRes.headers, MASKED_DROP, opts.extraHeaders);
    let headerHits: string[];
    try {
      headerHits = maskHeaderValues(headers, m);
    } catch (err) {
      return fail(`the response headers could not be masked: ${(err as Error).message}`);
    }

    const isJson = format === 'json';
    const streaming = format !== 'sniff' && (opts.stream || ndjson || ct.includes('stream=watch') || ct.startsWith('text/event-stream'));
    if (streaming) {
      // One JSON document (or one text line, e.g. `logs -f`) per line; each is masked and flushed on its own.
      res.writeHead(status, headers);
      const counter = countBytes(res);
      const masked = new Set<string>(headerHits);
      let pending: Buffer = Buffer.alloc(0);
      let failed: string | undefined;
      const emit = (line: Buffer): boolean => {
        try {
          if (!isJson) {
            if (line.includes(0)) {
              failed = 'a streamed line contains NUL bytes (UTF-16/32?), which detectors cannot read; the stream was cut';
              return false;
            }
            const r = m.maskText(line.toString('utf8'));
            for (const x of r.masked) masked.add(x);
            res.write(r.value + '\n');
            return true;
          }
          if (line.length === 0 || /^\s*$/.test(line.toString('latin1'))) return true;
          let doc: unknown;
          try {
            doc = JSON.parse(line.toString('utf8'));
          } catch {
            failed = 'a streamed event was not JSON; the stream was cut rather than relayed unmasked';
            return false;
          }
          const refused = opts.refuseDocument?.(doc);
          if (refused) {
            failed = `${refused}; the stream was cut`;
            return false;
          }
          const r = m.mask(doc);
          for (const x of r.masked) masked.add(x);
          res.write(JSON.stringify(r.value) + '\n');
          return true;
        } catch (err) {
          failed = `a streamed event could not be masked (${(err as Error).message}); the stream was cut`;
          return false;
        }
      };
      const cut = () => {
        proxyRes.destroy();
        res.destroy();
        done({ status, bytes: counter.bytes, masked: [...masked], error: failed });
      };
      body.on('data', (chunk: Buffer) => {
        if (failed) return;
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        let nl: number;
        while ((nl = pending.indexOf(0x0a)) >= 0) {
          const line = pending.subarray(0, nl);
          pending = pending.subarray(nl + 1);
          if (!emit(line)) break;
        }
        if (!failed && pending.length > opts.maxBytes) failed = `a streamed event exceeded ${opts.maxBytes} bytes`;
        if (failed) cut();
      });
      body.on('end', () => {
        if (failed) return;
        if (pending.length && !isJson) {
          try {
            const r = m.maskText(pending.toString('utf8'));
            for (const x of r.masked) masked.add(x);
            res.write(r.value);
          } catch (err) {
            failed = `the last line could not be masked: ${(err as Error).message}`;
            return cut();
          }
        } else if (pending.length && !emit(pending)) return cut();
        res.end();
        done({ status, bytes: counter.bytes, masked: [...masked] });
      });
      res.once('close', () => {
        if (!res.writableFinished && !failed) {
          proxyRes.destroy();
          done({ status, bytes: counter.bytes, masked: [...masked], error: 'client closed the connection before the response ended' });
        }
      });
      return;
    }

    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    body.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > opts.maxBytes) {
        over = true;
        proxyRes.destroy();
        fail(`the response exceeds ${opts.maxBytes} bytes (http.maxMaskedResponseBytes) and must be masked; it was withheld`);
        return;
      }
      chunks.push(chunk);
    });
    body.on('end', () => {
      if (over || settled) return;
      // Any failure while masking fails this response closed; it never escapes the handler.
      try {
        const raw = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        let out: Buffer;
        let masked: string[];
        if (format === 'text') {
          // NUL bytes mean a wide encoding (UTF-16/32, also behind a BOM and no charset): detectors would not see its text.
          if (raw.includes(0)) return fail('the upstream text contains NUL bytes (UTF-16/32?), which detectors cannot read; it was withheld', 'unmaskable response');
          const r = m.maskText(raw.toString('utf8'));
          out = Buffer.from(r.value);
          masked = r.masked;
        } else if (raw.length === 0) {
          out = raw;
          masked = [];
        } else {
          // Field masks only: rewritten on the bytes (same masking as below, without parsing the
          // whole document into objects and serializing it again); undefined when the fast path
          // cannot vouch for the body (detectors, not UTF-8, not strict JSON, too deep), which is
          // then parsed below, and refused there if it does not parse.
          const fast = opts.refuseDocument ? undefined : m.maskBytes(raw);
          if (fast) {
            if (format === 'sniff') headers['content-type'] = 'application/json';
            headers['content-length'] = fast.value.length;
            res.writeHead(status, headers);
            res.end(fast.value);
            return done({ status, bytes: fast.value.length, masked: headerHits.length ? [...headerHits, ...fast.masked] : fast.masked });
          }
          let doc: unknown;
          try {
            doc = JSON.parse(raw.toString('utf8'));
          } catch {
            return fail(
              format === 'json'
                ? 'the upstream response is labelled JSON but does not parse, and it must be masked; it was withheld'
                : `the upstream response (${ct.split(';')[0] || 'no content type'}) is not JSON, and it must be masked; it was withheld`,
              format === 'json' ? 'bad gateway' : 'unmaskable response',
            );
          }
          const refused = opts.refuseDocument?.(doc);
          if (refused) return fail(refused, 'unmaskable response');
          const r = m.mask(doc);
          out = Buffer.from(JSON.stringify(r.value));
          masked = r.masked;
          if (format === 'sniff') headers['content-type'] = 'application/json';
        }
        headers['content-length'] = out.length;
        res.writeHead(status, headers);
        res.end(out);
        done({ status, bytes: out.length, masked: [...headerHits, ...masked] });
      } catch (err) {
        fail((err as Error).message);
      }
    });
  });
}
