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

// ---------------------------------------------------------------------------------------------
// CSV format (`COPY ... TO STDOUT (FORMAT csv)`, psql's `\copy ... csv`): fields separated by a
// delimiter (comma), optionally quoted; inside quotes the escape char (default: the quote char)
// escapes the quote and itself; NULL is an UNQUOTED field equal to the null string (default empty).
// One row may span several lines when a quoted value holds a newline; the server sends a whole row
// per CopyData message, so a row is what callers pass here.

export interface CsvDialect {
  delimiter: number;
  quote: number;
  escape: number;
}

export interface RawField {
  /** Bytes of the field as sent (including quotes for quoted fields). */
  start: number;
  end: number;
  quoted: boolean;
}

/** Splits one CSV row into raw fields. Throws on an unterminated quote. */
export function splitCsvRow(buf: Uint8Array, start: number, end: number, d: CsvDialect): RawField[] {
  const fields: RawField[] = [];
  let i = start;
  for (;;) {
    const fs = i;
    if (i < end && buf[i] === d.quote) {
      i++;
      for (;;) {
        if (i >= end) throw new Error('masking: unterminated quoted CSV field in COPY output');
        const c = buf[i];
        if (c === d.escape && d.escape !== d.quote && i + 1 < end && (buf[i + 1] === d.quote || buf[i + 1] === d.escape)) i += 2;
        else if (c === d.quote) {
          if (d.escape === d.quote && i + 1 < end && buf[i + 1] === d.quote) i += 2;
          else {
            i++;
            break;
          }
        } else i++;
      }
      // Anything up to the delimiter belongs to this field (PostgreSQL never writes it).
      while (i < end && buf[i] !== d.delimiter) i++;
      fields.push({ start: fs, end: i, quoted: true });
    } else {
      while (i < end && buf[i] !== d.delimiter) i++;
      fields.push({ start: fs, end: i, quoted: false });
    }
    if (i >= end) return fields;
    i++; // delimiter
  }
}

/** The value of a raw CSV field (a binary string). */
export function decodeCsvField(buf: Uint8Array, f: RawField, d: CsvDialect): string {
  if (!f.quoted) return Buffer.from(buf.buffer, buf.byteOffset + f.start, f.end - f.start).toString('latin1');
  let out = '';
  let i = f.start + 1;
  for (; i < f.end; i++) {
    const c = buf[i];
    if (c === d.escape && i + 1 < f.end && (buf[i + 1] === d.quote || buf[i + 1] === d.escape) && !(d.escape === d.quote && i + 1 === f.end - 1)) {
      out += String.fromCharCode(buf[i + 1]);
      i++;
    } else if (c === d.quote) break;
    else out += String.fromCharCode(c);
  }
  return out;
}

/** A value as a quoted CSV field (always quoted: valid for any content, and never mistaken for NULL). */
export function encodeCsvField(value: string, d: CsvDialect): string {
  const q = String.fromCharCode(d.quote);
  const e = String.fromCharCode(d.escape);
  let out = q;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === q || ch === e) out += e + ch;
    else out += ch;
  }
  return out + q;
}
