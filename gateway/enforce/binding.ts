// What an approval covers: the exact operation, not its shape. The digest is keyed (HMAC), so the
// audit can keep it without becoming a dictionary of the values, and covers every byte that can
// change what the upstream does: statement text, each bound parameter's bytes and format, the
// request body. What approvers read is the same operation with PII detectors applied to values.
import { createHash, createHmac } from 'node:crypto';
import type { OperationBinding } from '../approvals/approver.ts';
import { redactDetected } from '../masking/redact-text.ts';
import type { Operation } from '../policy/operation.ts';

/** Longest parameter value shown to an approver; the digest still covers all of it. */
const SHOWN_PARAMETER_CHARS = 200;

/** A bound parameter: its bytes (null = SQL NULL) and whether the client sent it as binary. */
export interface BoundParameter {
  value: Buffer | null;
  binary: boolean;
}

export interface BindingInput {
  /** Parameters bound to the statement (PostgreSQL extended protocol). */
  parameters?: readonly BoundParameter[];
  /** The exact request body (HTTP, Kubernetes). */
  body?: Buffer;
  /** Lines added to what the approver sees (body summary, open transaction ...). */
  details?: string[];
  /** What the approver reads instead of the operation text (a long body cut for display, with its size and hash). */
  shownText?: string;
}

function shownParameter(p: BoundParameter, i: number): string {
  if (p.value === null) return `$${i + 1} = NULL`;
  if (p.binary) return `$${i + 1} = <binary, ${p.value.length} bytes, sha256 ${createHash('sha256').update(p.value).digest('hex').slice(0, 12)}>`;
  const text = redactDetected(p.value.toString('utf8'));
  const cut = text.length > SHOWN_PARAMETER_CHARS ? `${text.slice(0, SHOWN_PARAMETER_CHARS)}... (${p.value.length} bytes)` : text;
  return `$${i + 1} = ${JSON.stringify(cut)}`;
}

/** The binding of `op` (whose text is what runs) with its parameters and body, under `key`. */
export function bindOperation(op: Operation, key: string, input: BindingInput = {}): OperationBinding {
  const h = createHmac('sha256', key);
  const field = (tag: string, b: Buffer | string) => {
    const buf = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(buf.length);
    h.update(tag).update(len).update(buf);
  };
  field('protocol', op.protocol);
  field('text', op.text);
  const params = input.parameters ?? [];
  field('nparams', String(params.length));
  for (const p of params) field(p.value === null ? 'null' : p.binary ? 'bin' : 'txt', p.value ?? Buffer.alloc(0));
  if (input.body) field('body', input.body);
  const binding: OperationBinding = { text: redactDetected(input.shownText ?? op.text), digest: h.digest('hex') };
  if (params.length > 0) binding.parameters = params.map(shownParameter);
  const details = [...(op.tables.length > 0 ? [`tables: ${op.tables.join(', ')}`] : []), `session ${op.connection.sessionId} from ${op.connection.clientAddress}`, ...(input.details ?? [])];
  binding.details = details;
  return binding;
}
