// The shape of a simple statement: its text with literal values replaced by `?`, so that
// `SELECT abalance FROM a WHERE aid = 17` and `... aid = 42` share one classification without a
// second parse. Deliberately conservative: anything a tiny lexer could misread (comments, dollar
// quotes, backslashes, prefixed strings such as E'...', several statements) has no shape and
// goes to the real parser. The policy still sees the real text (regex rules run on it).

const IDENT = /[A-Za-z0-9_$\u0080-\uffff]/;

/** The literal-free shape of `query`, or undefined when it is not simple enough to be sure. */
export function statementShape(query: string): string | undefined {
  if (query.length > 8192 || query.includes('\\')) return undefined;
  let out = '';
  let i = 0;
  const n = query.length;
  while (i < n) {
    const c = query[i];
    if (c === '$' || c === '\\' || (c === '-' && query[i + 1] === '-') || (c === '/' && query[i + 1] === '*')) return undefined;
    if (c === ';') {
      if (query.slice(i + 1).trim() !== '') return undefined; // one statement only
      break;
    }
    if (c === "'") {
      if (i > 0 && (IDENT.test(query[i - 1]) || query[i - 1] === '&')) return undefined; // E'..', B'..', U&'..', N'..'
      let j = i + 1;
      for (;;) {
        if (j >= n) return undefined;
        if (query[j] === "'") {
          if (query[j + 1] === "'") j += 2;
          else break;
        } else j++;
      }
      out += "'?'";
      i = j + 1;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      for (;;) {
        if (j >= n) return undefined;
        if (query[j] === '"') {
          if (query[j + 1] === '"') j += 2;
          else break;
        } else j++;
      }
      out += query.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if ((c >= '0' && c <= '9') || (c === '.' && query[i + 1] >= '0' && query[i + 1] <= '9')) {
      if (i > 0 && IDENT.test(query[i - 1])) {
        out += c; // part of an identifier such as t1
        i++;
        continue;
      }
      const m = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(query.slice(i, i + 64));
      if (!m) return undefined;
      const after = query[i + m[0].length];
      if (after !== undefined && (IDENT.test(after) || after === '.')) return undefined; // 123abc, 1.2.3
      out += '?';
      i += m[0].length;
      continue;
    }
    out += c;
    i++;
  }
  return out.trim();
}
