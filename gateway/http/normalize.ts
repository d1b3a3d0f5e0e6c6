// Request path normalization. Rules are decided on the normalized path, and the normalized path is
// what goes upstream, so what was decided is exactly what runs. Anything whose meaning depends on
// how the upstream decodes it is refused (400) instead of guessed at:
//   - dot segments (`..`, `.`), also percent-encoded (`%2e%2e`, `.%2E`);
//   - encoded `/`, `\`, `%` (double encoding: `%252e`), NUL and other control characters;
//   - backslashes (some servers treat `\` as `/`), and `;` (servlet path parameters: `/admin;x`
//     reaches `/admin` on Tomcat/Jetty);
//   - invalid percent-escapes and invalid UTF-8.
// Repeated slashes collapse to one (every mainstream router treats `//a` as `/a`).

export type NormalizedPath = { ok: true; path: string; encoded: string } | { ok: false; reason: string };

// RFC 3986 pchar minus `;` (refused above) and `%` (re-encoded): left as-is when re-encoding.
const KEEP = /[A-Za-z0-9\-._~!$&'()*+,=:@]/;

function encodeSegment(seg: string): string {
  let out = '';
  for (const ch of seg) {
    if (ch.length === 1 && KEEP.test(ch)) out += ch;
    else out += encodeURIComponent(ch);
  }
  return out;
}

/**
 * `raw` is the path part of the request target (no query). Returns the decoded path (for rules)
 * and its canonical encoding (to forward), or why it is refused.
 */
/** A path already in canonical form: segments of KEEP characters only (no `%`, `;`, `\\`, empty segments). */
const CANONICAL = /^(?:\/[A-Za-z0-9\-._~!$&'()*+,=:@]+)+\/?$/;
/** A `.` or `..` segment. */
const DOT_SEGMENT = /(?:^|\/)\.\.?(?:\/|$)/;

export function normalizePath(raw: string): NormalizedPath {
  // Fast path: nothing to decode or re-encode, so the general loop below would return `raw` as both forms.
  if (CANONICAL.test(raw) && !DOT_SEGMENT.test(raw)) return { ok: true, path: raw, encoded: raw };
  return normalizeAnyPath(raw);
}

/** normalizePath without its fast path (exported so tests can hold the two to the same answers). */
export function normalizeAnyPath(raw: string): NormalizedPath {
  if (!raw.startsWith('/')) return { ok: false, reason: 'the request path must start with /' };
  if (raw.includes('\\')) return { ok: false, reason: 'backslashes are not allowed in the path' };
  if (/%(2f|5c|25|00)/i.test(raw)) return { ok: false, reason: 'encoded "/", "\\", "%" or NUL in the path is ambiguous (double encoding)' };
  if (/%(?![0-9a-f]{2})/i.test(raw)) return { ok: false, reason: 'invalid percent-escape in the path' };
  const segments: string[] = [];
  for (const rawSeg of raw.split('/')) {
    if (rawSeg === '') continue;
    let seg: string;
    try {
      seg = decodeURIComponent(rawSeg);
    } catch {
      return { ok: false, reason: 'the path is not valid percent-encoded UTF-8' };
    }
    if (seg === '.' || seg === '..') return { ok: false, reason: 'dot segments ("." / "..") are not allowed in the path' };
    if (seg.includes(';')) return { ok: false, reason: 'path parameters (";") are not allowed in the path' };
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(seg)) return { ok: false, reason: 'control characters are not allowed in the path' };
    segments.push(seg);
  }
  const trailing = raw.length > 1 && raw.endsWith('/') && segments.length > 0;
  const path = '/' + segments.join('/') + (trailing ? '/' : '');
  const encoded = '/' + segments.map(encodeSegment).join('/') + (trailing ? '/' : '');
  return { ok: true, path, encoded };
}

/** Splits a request target into path and query (without `?`). Absolute-form targets are refused by the caller. */
export function splitTarget(url: string): { path: string; query: string } {
  const q = url.indexOf('?');
  return q < 0 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q + 1) };
}
