// Helpers between the session and the masking layer (row-masker.ts).
import type { MaskPlan } from '../policy/decision.ts';
import type { FieldInfo } from './row-masker.ts';

export function planNeedsMasking(plan: MaskPlan): boolean {
  return plan.columns.length > 0 || plan.detectors.length > 0;
}

/** Parses a RowDescription frame ([start, end) covers the whole message, header included). */
export function parseRowDescription(buf: Buffer, start: number, end: number): FieldInfo[] {
  const n = buf.readInt16BE(start + 5);
  const fields: FieldInfo[] = [];
  let off = start + 7;
  for (let i = 0; i < n; i++) {
    const nul = buf.indexOf(0, off);
    if (nul < 0 || nul + 19 > end) throw new Error('malformed RowDescription from upstream');
    const name = buf.toString('utf8', off, nul);
    off = nul + 1;
    const tableOid = buf.readUInt32BE(off);
    const columnId = buf.readInt16BE(off + 4);
    const typeOid = buf.readUInt32BE(off + 6);
    const format = buf.readInt16BE(off + 16) === 1 ? 1 : 0;
    fields.push({ name, tableOid, columnId, typeOid, format });
    off += 18;
  }
  return fields;
}
