// A local OTLP/HTTP traces receiver: accepts what the real @opentelemetry/exporter-trace-otlp-http
// POSTs to /v1/traces (JSON encoding of ExportTraceServiceRequest) and keeps the spans, with their
// attributes flattened, for tests to read. Anything else on the wire (protobuf, another path) is a
// 415/404 and recorded as a protocol error, so a change of encoding fails the tests loudly.
import { startLocalServer, type LocalServer } from './local-server.ts';

export type AttrValue = string | number | boolean | AttrValue[];

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, AttrValue>;
  status?: { code?: number; message?: string };
  resource: Record<string, AttrValue>;
  /** The request body's raw JSON text this span came in (to look for leaks anywhere in it). */
  raw: string;
}

interface OtlpAnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpAnyValue[] };
}
interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number; message?: string };
}
interface OtlpRequest {
  resourceSpans?: { resource?: { attributes?: OtlpKeyValue[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[];
}

function value(v: OtlpAnyValue): AttrValue {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(value);
  return '';
}

function attrs(kv: OtlpKeyValue[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const a of kv ?? []) out[a.key] = value(a.value);
  return out;
}

export interface OtlpReceiver {
  /** The traces URL to configure (http://127.0.0.1:PORT/v1/traces). */
  url: string;
  readonly spans: ReceivedSpan[];
  /** Every request body received (raw JSON text). */
  readonly bodies: string[];
  /** Requests that were not an OTLP/HTTP JSON export. */
  readonly errors: string[];
  /** Request headers of every export received. */
  readonly headers: Record<string, string | string[] | undefined>[];
  /** Polls until a span matches, or fails naming `what`. */
  waitForSpan(pred: (s: ReceivedSpan) => boolean, what: string, timeoutMs?: number): Promise<ReceivedSpan>;
  stop(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const bodies: string[] = [];
  const errors: string[] = [];
  const headers: Record<string, string | string[] | undefined>[] = [];
  const server: LocalServer = await startLocalServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      errors.push(`${req.method} ${req.url}`);
      res.writeHead(404).end();
      return;
    }
    if (!String(req.headers['content-type']).startsWith('application/json')) {
      errors.push(`content-type ${req.headers['content-type']}`);
      res.writeHead(415).end();
      return;
    }
    bodies.push(body);
    headers.push({ ...req.headers });
    const parsed = JSON.parse(body) as OtlpRequest;
    for (const rs of parsed.resourceSpans ?? []) {
      const resource = attrs(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          spans.push({ traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? '', name: s.name, kind: s.kind, attributes: attrs(s.attributes), status: s.status, resource, raw: body });
        }
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  return {
    url: `http://127.0.0.1:${server.port}/v1/traces`,
    spans,
    bodies,
    errors,
    headers,
    async waitForSpan(pred, what, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const s = spans.find(pred);
        if (s) return s;
        if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for a span: ${what}; received: ${spans.map((x) => `${x.name} ${x.traceId}/${x.parentSpanId}`).join('; ') || 'none'}; errors: ${errors.join('; ') || 'none'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: () => server.stop(),
  };
}
