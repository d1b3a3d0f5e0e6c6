// Relays an upstream response to the client, masking it when the decision asks for it.
//
// - Nothing to mask: status, headers and body stream through untouched (no buffering, so
//   `kubectl get -w` and `logs -f` arrive as they are produced).
// - JSON (`application/json`, `*+json`): decompressed (gzip, deflate, br), parsed within a bounded
//   buffer, masked, and sent uncompressed with a correct content-length (content-encoding, etag
//   and content-md5 dropped, since the bytes changed).
// - Streams (Kubernetes watch, `;stream=watch`, `logs -f`): masked one line at a time (JSON events
//   or text lines) and flushed as each arrives.
// - text/*: content detectors only, bounded buffer.
// - Kubernetes protobuf while masking is required: refused (502); the gateway asks for JSON when
//   it must mask, so this only happens when the upstream ignores Accept. Other binary bodies
//   pass through untouched.
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
  const out: http.OutgoingHttpHeaders = {};
  const extra = new Set(drop);
  for (const [k, v] of Object.entries(src)) {
    if (v === undefined || HOP_BY_HOP.has(k) || extra.has(k)) continue;
    out[k] = v;
  }
  return out;
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

export function relayResponse(
  proxyRes: http.IncomingMessage,
  res: http.ServerResponse,
  masker: JsonMasker | undefined,
  opts: { maxBytes: number; stream: boolean; extraHeaders?: http.OutgoingHttpHeaders },
): Promise<RelayResult> {
  const status = proxyRes.statusCode ?? 502;
  const ct = String(proxyRes.headers['content-type'] ?? '').toLowerCase();
  const ndjson = /(nd|x-ld|l)json\b|json-seq/.test(ct);
  const isJson = ndjson || /(^|\/|\+)json\b/.test(ct.split(';')[0] ?? '') || ct.startsWith('application/json');
  const isText = ct.startsWith('text/');
  const noBody = status === 204 || status === 304 || res.req?.method === 'HEAD';
  const needsMask = masker !== undefined && !masker.empty && !noBody && (isJson || isText || ct.includes('protobuf'));

  return new Promise<RelayResult>((resolve) => {
    const fail = (error: string): void => {
      proxyRes.resume();
      sendJson(res, 502, { error: 'bad gateway', reason: error });
      resolve({ status: 502, bytes: 0, masked: [], error });
    };

    if (!needsMask) {
      res.writeHead(status, { ...responseHeaders(proxyRes.headers), ...opts.extraHeaders });
      const counter = countBytes(res);
      proxyRes.pipe(res);
      const done = (error?: string) => resolve({ status, bytes: counter.bytes, masked: [], ...(error ? { error } : {}) });
      res.once('finish', () => done());
      res.once('close', () => {
        if (!res.writableFinished) {
          proxyRes.destroy();
          done('client closed the connection before the response ended');
        }
      });
      proxyRes.once('error', (e) => {
        res.destroy();
        done(`upstream response failed: ${e.message}`);
      });
      return;
    }
    if (ct.includes('protobuf')) return fail('the upstream answered in protobuf, which Airlock cannot mask; the response was withheld');
    const dec = decoder(proxyRes.headers['content-encoding'] as string | undefined);
    if (dec === undefined) return fail(`unsupported content-encoding ${String(proxyRes.headers['content-encoding'])} on a response that must be masked`);
    const body: Readable = dec ? proxyRes.pipe(dec) : proxyRes;
    body.on('error', (e) => fail(`could not decode the upstream response: ${e.message}`));
    const m = masker!;
    const headers = { ...responseHeaders(proxyRes.headers, ['content-length', 'content-encoding', 'etag', 'content-md5']), ...opts.extraHeaders };

    const streaming = opts.stream || ndjson || ct.includes('stream=watch') || ct.startsWith('text/event-stream');
    if ((isJson || isText) && streaming) {
      // One JSON document (or one text line, e.g. `logs -f`) per line; each is masked and flushed on its own.
      res.writeHead(status, headers);
      const counter = countBytes(res);
      const masked = new Set<string>();
      let pending: Buffer = Buffer.alloc(0);
      let failed: string | undefined;
      const emit = (line: Buffer): boolean => {
        if (!isJson) {
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
        const r = m.mask(doc);
        for (const x of r.masked) masked.add(x);
        res.write(JSON.stringify(r.value) + '\n');
        return true;
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
        if (failed) {
          proxyRes.destroy();
          res.destroy();
          resolve({ status, bytes: counter.bytes, masked: [...masked], error: failed });
        }
      });
      body.on('end', () => {
        if (failed) return;
        if (pending.length && !isJson) {
          const r = m.maskText(pending.toString('utf8'));
          for (const x of r.masked) masked.add(x);
          res.write(r.value);
        } else if (pending.length && !emit(pending)) {
          res.destroy();
          resolve({ status, bytes: counter.bytes, masked: [...masked], error: failed });
          return;
        }
        res.end();
        resolve({ status, bytes: counter.bytes, masked: [...masked] });
      });
      res.once('close', () => {
        if (!res.writableFinished && !failed) {
          proxyRes.destroy();
          resolve({ status, bytes: counter.bytes, masked: [...masked], error: 'client closed the connection before the response ended' });
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
      if (over) return;
      const raw = Buffer.concat(chunks);
      let out: Buffer;
      let masked: string[];
      if (isJson) {
        if (raw.length === 0) {
          out = raw;
          masked = [];
        } else {
          let doc: unknown;
          try {
            doc = JSON.parse(raw.toString('utf8'));
          } catch {
            return fail('the upstream response is labelled JSON but does not parse, and it must be masked; it was withheld');
          }
          const r = m.mask(doc);
          out = Buffer.from(JSON.stringify(r.value));
          masked = r.masked;
        }
      } else {
        const r = m.maskText(raw.toString('utf8'));
        out = Buffer.from(r.value);
        masked = r.masked;
      }
      headers['content-length'] = out.length;
      res.writeHead(status, headers);
      res.end(out);
      resolve({ status, bytes: out.length, masked });
    });
  });
}
