// What an HTTP or Kubernetes request IS, for rules and for approvals:
//
// - canonicalBody(): the body in the one form rules match (`text` regexes): JSON parsed and
//   re-serialized (so `\u0058BT` is `XBT`, whitespace and escapes cannot hide a token), YAML
//   parsed and serialized as JSON, form bodies decoded, plain text as is. Anything else (protobuf,
//   compressed or binary bodies, unparseable YAML) is `opaque`: rules cannot read it, and the
//   gateway refuses it when a rule that reads bodies applies (server.ts).
// - requestBinding(): {summary, digest} of a request. The digest covers the method, the decoded
//   path, the canonical query and the SHA-256 of the WHOLE body as sent (not the canonical form:
//   an approval binds to the exact bytes); the summary is what an approver reads, never silently
//   truncated (a cut says so, with the size and hash of what is bound).
import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { describeKubernetes } from '../kubernetes/classify.ts';
import type { KubernetesFacts } from '../policy/operation.ts';
import { jsonDeeperThan, MAX_JSON_DEPTH } from './json-mask.ts';

export type BodyKind = 'empty' | 'json' | 'yaml' | 'form' | 'text' | 'opaque';

export interface CanonicalBody {
  kind: BodyKind;
  /** What rules match: canonical JSON, decoded form, text; for opaque bodies a description. */
  text: string;
  /** The parsed document (json, yaml). */
  value?: unknown;
  /** Set when the body claims JSON but does not parse (the request is refused with 400). */
  invalidJson?: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function opaque(body: Buffer, what: string): CanonicalBody {
  return { kind: 'opaque', text: `<${body.length} bytes ${what}, sha256 ${sha256(body)}>` };
}

/** The body as rules see it. `contentType`/`contentEncoding` are the request's headers. */
export function canonicalBody(body: Buffer, contentType: string | undefined, contentEncoding?: string): CanonicalBody {
  if (body.length === 0) return { kind: 'empty', text: '' };
  const ct = (contentType ?? '').toLowerCase();
  const base = (ct.split(';')[0] ?? '').trim();
  const enc = (contentEncoding ?? '').trim().toLowerCase();
  if (enc !== '' && enc !== 'identity') return opaque(body, `${base || 'body'} (content-encoding ${enc})`);
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return opaque(body, base || 'application/octet-stream');
  }
  const labelledJson = base === 'application/json' || base.endsWith('+json') || base.endsWith('-patch+json') || base === 'text/json';
  if (labelledJson || base === '' || base === 'text/plain') {
    // Upstreams commonly parse JSON whatever the label: a body that is JSON is matched as JSON.
    try {
      const value: unknown = JSON.parse(text);
      // Too deep to re-serialize safely, and no real request nests like that: rules cannot read it.
      if (jsonDeeperThan(value, MAX_JSON_DEPTH)) return opaque(body, `JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
      return { kind: 'json', text: JSON.stringify(value), value };
    } catch (err) {
      if (labelledJson) return { kind: 'opaque', text: '', invalidJson: (err as Error).message };
    }
    return { kind: 'text', text };
  }
  if (base.includes('yaml')) {
    // `application/apply-patch+yaml` (server-side apply), application/yaml, text/yaml.
    try {
      const value: unknown = parseYaml(text, { maxAliasCount: 100 });
      if (jsonDeeperThan(value, MAX_JSON_DEPTH)) return opaque(body, `YAML nested deeper than ${MAX_JSON_DEPTH} levels`);
      return { kind: 'yaml', text: JSON.stringify(value) ?? '', value };
    } catch {
      return opaque(body, `${base} that does not parse`);
    }
  }
  if (base === 'application/x-www-form-urlencoded') {
    const pairs: string[] = [];
    for (const [k, v] of new URLSearchParams(text)) pairs.push(`${k}=${v}`);
    return { kind: 'form', text: pairs.join('&') };
  }
  if (base.startsWith('text/')) return { kind: 'text', text };
  return opaque(body, base);
}

/** Query pairs decoded and re-encoded one way, sorted by name (values of one name keep their order). */
export function canonicalQuery(query: string): string {
  const pairs = [...new URLSearchParams(query)].map(([k, v], i) => ({ k, v, i }));
  pairs.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.i - b.i));
  return pairs.map((p) => `${encodeURIComponent(p.k)}=${encodeURIComponent(p.v)}`).join('&');
}

/** Approvers read at most this much of a body; a longer one is cut with an explicit notice. */
export const SUMMARY_BODY_LIMIT = 4096;

export interface BindingInput {
  method: string;
  /** Decoded, normalized path below the connection prefix. */
  path: string;
  /** Raw query string without `?`. */
  query: string;
  /** The whole request body as it will be forwarded. */
  body: Buffer;
  contentType?: string;
  contentEncoding?: string;
  /** Kubernetes facts: the summary's first line is then the kubectl-like description. */
  kubernetes?: KubernetesFacts;
  /** Connection name, part of the digest when given. */
  connection?: string;
}

export interface RequestBinding {
  /** Readable: the operation line (query included), then the canonical body (cut explicitly if long). */
  summary: string;
  /** sha256 hex over connection, method, path, canonical query and body hash. */
  digest: string;
  method: string;
  path: string;
  canonicalQuery: string;
  bodySha256: string;
  bodyBytes: number;
}

/** The identity of a request for approvals: same digest = same method, path, query and body bytes. */
export function requestBinding(r: BindingInput): RequestBinding {
  const method = r.method.toUpperCase();
  const cq = canonicalQuery(r.query);
  const bodySha256 = sha256(r.body);
  const digest = sha256(JSON.stringify(['airlock-http-request-v1', r.connection ?? '', method, r.path, cq, bodySha256]));
  const line = r.kubernetes ? describeKubernetes(r.kubernetes, method, r.path, r.query) : `${method} ${r.path}${r.query ? `?${r.query}` : ''}`;
  const cb = canonicalBody(r.body, r.contentType, r.contentEncoding);
  let shown = cb.invalidJson !== undefined ? `<${r.body.length} bytes that claim JSON but do not parse>` : cb.text;
  if (shown.length > SUMMARY_BODY_LIMIT) {
    shown = `${shown.slice(0, SUMMARY_BODY_LIMIT)}\n[body cut for display: ${SUMMARY_BODY_LIMIT} of ${shown.length} characters shown; the approval covers the whole ${r.body.length}-byte body, sha256 ${bodySha256}]`;
  }
  return { summary: shown ? `${line}\n${shown}` : line, digest, method, path: r.path, canonicalQuery: cq, bodySha256, bodyBytes: r.body.length };
}
