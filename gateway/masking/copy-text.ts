// COPY text format fields (the default `COPY ... TO STDOUT` format): columns separated by a
// delimiter (tab), `\N` for NULL, and backslash escapes for backslash, the delimiter, newline,
// carriage return, tab, backspace, form feed, vertical tab, octal `\ooo` and hex `\xhh` bytes.
// Values are binary strings (one char per byte), like everywhere in masking.

/** Decode one raw field (without `\N` handling) into a binary string. */
export function decodeCopyField(buf: Uint8Array, start: number, end: number): string {
  let out = '';
  let i = start;
  while (i < end) {
    const c = buf[i];
    if (c !== 0x5c || i + 1 >= end) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    const e = buf[i + 1];
    i += 2;
    switch (e) {
      case 0x62: out += '\b'; break; // b
      case 0x66: out += '\f'; break; // f
      case 0x6e: out += '\n'; break; // n
      case 0x72: out += '\r'; break; // r
      case 0x74: out += '\t'; break; // t
      case 0x76: out += '\v'; break; // v
      case 0x78: { // x: 1-2 hex digits
        let v = 0;
        let k = 0;
        while (k < 2 && i < end && isHex(buf[i])) v = v * 16 + hexVal(buf[i++]), k++;
        out += k === 0 ? 'x' : String.fromCharCode(v & 0xff);
        break;
      }
      default:
        if (e >= 0x30 && e <= 0x37) { // octal: 1-3 digits
          let v = e - 0x30;
          let k = 1;
          while (k < 3 && i < end && buf[i] >= 0x30 && buf[i] <= 0x37) v = v * 8 + (buf[i++] - 0x30), k++;
          out += String.fromCharCode(v & 0xff);
        } else out += String.fromCharCode(e);
    }
  }
  return out;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hexVal(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57;
}

/** Encode a binary string as a COPY text field (the inverse of decodeCopyField). */
export function encodeCopyField(value: string, delimiter = '\t'): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    switch (ch) {
      case '\\': out += '\\\\'; break;
      case '\n': out += '\\n'; break;
      case '\r': out += '\\r'; break;
      case '\t': out += '\\t'; break;
      case '\b': out += '\\b'; break;
      case '\f': out += '\\f'; break;
      case '\v': out += '\\v'; break;
      default: out += ch === delimiter ? '\\' + ch : ch;
    }
  }
  return out;
}
