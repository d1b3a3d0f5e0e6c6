// The shape of a simple statement: its text with literal values replaced by `?`, so that
// `SELECT abalance FROM a WHERE aid = 17` and `... aid = 42` share one classification without a
// second parse. Deliberately conservative: anything a tiny lexer could misread (comments, dollar
// quotes, backslashes, prefixed strings such as E'...', several statements) has no shape and
// goes to the real parser. The policy still sees the real text (regex rules run on it).

const IDENT = /[A-Za-z0-9_$\u0080-\uffff]/;
const NUMBER = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/;

/** The literal-free shape of `query`, or undefined when it is not simple enough to be sure. */
export function statementShape(query: string): string | undefined {
  if (query.length > 8192 || query.includes('\\')) return undefined;
  // Built from slices of the query between literals (one string per literal, not one per
  // character): this runs for every simple-protocol statement whose exact text is not cached.
  let out = '';
  let from = 0; // start of the text not yet copied to `out`
  let i = 0;
  let n = query.length;
  while (i < n) {
    const c = query.charCodeAt(i);
    if (c === 0x24 /* $ */ || c === 0x5c /* \ */ || (c === 0x2d /* - */ && query.charCodeAt(i + 1) === 0x2d) || (c === 0x2f /* / */ && query.charCodeAt(i + 1) === 0x2a /* * */)) return undefined;
    if (c === 0x3b /* ; */) {
      if (query.slice(i + 1).trim() !== '') return undefined; // one statement only
      n = i;
      break;
    }
    if (c === 0x27 /* ' */) {
      if (i > 0 && (IDENT.test(query[i - 1]) || query[i - 1] === '&')) return undefined; // E'..', B'..', U&'..', N'..'
      let j = i + 1;
      for (;;) {
        if (j >= n) return undefined;
        if (query.charCodeAt(j) === 0x27) {
          if (query.charCodeAt(j + 1) === 0x27) j += 2;
          else break;
        } else j++;
      }
      out += `${query.slice(from, i)}'?'`;
      i = j + 1;
      from = i;
      continue;
    }
    if (c === 0x22 /* " */) {
      let j = i + 1;
      for (;;) {
        if (j >= n) return undefined;
        if (query.charCodeAt(j) === 0x22) {
          if (query.charCodeAt(j + 1) === 0x22) j += 2;
          else break;
        } else j++;
      }
      i = j + 1; // kept as written
      continue;
    }
    const digit = c >= 0x30 && c <= 0x39;
    if (digit || (c === 0x2e /* . */ && query.charCodeAt(i + 1) >= 0x30 && query.charCodeAt(i + 1) <= 0x39)) {
      if (i > 0 && IDENT.test(query[i - 1])) {
        i++; // part of an identifier such as t1
        continue;
      }
      const m = NUMBER.exec(query.slice(i, i + 64));
      if (!m) return undefined;
      const after = query[i + m[0].length];
      if (after !== undefined && (IDENT.test(after) || after === '.')) return undefined; // 123abc, 1.2.3
      out += `${query.slice(from, i)}?`;
      i += m[0].length;
      from = i;
      continue;
    }
    i++;
  }
  return (out + query.slice(from, n)).trim();
}
