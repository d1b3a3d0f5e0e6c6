// The parameter values of a Bind message, for binding an approval to exactly what runs.
//   Bind: portal\0 statement\0 int16 nFormats, int16[nFormats] formats,
//         int16 nParams, nParams x (int32 len (-1 = NULL), bytes), int16 nResultFormats, int16[]
// Values are views on the frame (no copies); callers that keep them past the frame copy it.
import type { BoundParameter } from '../enforce/binding.ts';
import { ProtocolError, readCString } from './frames.ts';

/** The parameters of the Bind frame `buf[start, end)` (start at the type byte). */
export function bindParameters(buf: Buffer, start: number, end: number): BoundParameter[] {
  let off = start + 5;
  [, off] = readCString(buf, off, end);
  [, off] = readCString(buf, off, end);
  const need = (n: number) => {
    if (off + n > end) throw new ProtocolError('Bind message is truncated');
  };
  need(2);
  const nFormats = buf.readInt16BE(off);
  off += 2;
  if (nFormats < 0) throw new ProtocolError('Bind message has a negative format count');
  need(2 * nFormats);
  const formats: number[] = [];
  for (let i = 0; i < nFormats; i++) formats.push(buf.readInt16BE(off + 2 * i));
  off += 2 * nFormats;
  need(2);
  const n = buf.readInt16BE(off);
  off += 2;
  if (n < 0) throw new ProtocolError('Bind message has a negative parameter count');
  if (nFormats > 1 && nFormats !== n) throw new ProtocolError(`Bind message has ${nFormats} format codes for ${n} parameters`);
  const out: BoundParameter[] = [];
  for (let i = 0; i < n; i++) {
    need(4);
    const len = buf.readInt32BE(off);
    off += 4;
    const binary = (nFormats === 1 ? formats[0] : nFormats === 0 ? 0 : formats[i]) === 1;
    if (len === -1) {
      out.push({ value: null, binary });
      continue;
    }
    if (len < 0) throw new ProtocolError('Bind message has an invalid parameter length');
    need(len);
    out.push({ value: buf.subarray(off, off + len), binary });
    off += len;
  }
  return out;
}
