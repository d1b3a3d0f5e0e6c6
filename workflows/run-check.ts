// Is the approval run a hold joined really the one Airlock would have started for it?
//
// Holds join an open run by workflow id (USE_EXISTING), so several gateways share one request.
// Anyone who can start workflows in Temporal could otherwise start that id first (a request id is
// shown to the held client), with input of their choosing: another task queue whose worker answers
// `claim` with "released", or the real workflow with a harmless text for the approver to read, a
// smaller quorum, other approver groups or a longer grantTtl. The run's start event is written by
// Temporal and cannot change, so the gateway compares it with its own input before it follows the
// run. Signed decisions prove who decided; this proves WHAT they decided on.
import type { Client } from '@temporalio/client';
import { APPROVAL_WORKFLOW, type ApprovalInput } from './definitions.ts';

const sameSet = (a: readonly string[] | undefined, b: readonly string[] | undefined) => {
  const x = [...new Set(a ?? [])].sort();
  const y = [...new Set(b ?? [])].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

/** Why `got` (a run's input) may not stand for `want` (this hold's input); undefined when it may. */
export function runInputMismatch(want: ApprovalInput, got: ApprovalInput | undefined): string | undefined {
  if (!got || typeof got !== 'object' || !got.operation || typeof got.operation !== 'object') return 'its input is not an approval request';
  const w = want.operation;
  const g = got.operation;
  // What the approver reads and what the request is bound to.
  for (const k of ['protocol', 'connection', 'identity', 'owner', 'text', 'digest', 'kind', 'rule'] as const) {
    if ((g[k] ?? '') !== (w[k] ?? '')) return `its operation ${k} differs`;
  }
  if (JSON.stringify(g.parameters ?? []) !== JSON.stringify(w.parameters ?? [])) return 'its parameters differ';
  if (got.requestId !== want.requestId) return 'its request id differs';
  // Who may approve, and how much: the run may only be as strict as this hold's rule, or stricter.
  if (!sameSet(got.approverGroups, want.approverGroups)) return 'its approver groups differ';
  if (!(typeof got.quorum === 'number' && got.quorum >= want.quorum)) return 'its quorum is smaller';
  if (!(typeof got.timeoutMs === 'number' && got.timeoutMs <= want.timeoutMs)) return 'its timeout is longer';
  if ((got.grantTtlMs ?? 0) > (want.grantTtlMs ?? 0)) return 'it allows longer grants';
  if ((got.channel ?? '') !== (want.channel ?? '') || !sameSet(got.channels, want.channels)) return 'it posts to other channels';
  return undefined;
}

/**
 * Reads the run's start event (no worker needed) and says why it is not this hold's request, or
 * undefined. Throws only when Temporal cannot be read (the caller fails closed on that too).
 */
export async function verifyApprovalRun(client: Client, taskQueue: string, want: ApprovalInput, runId: string): Promise<string | undefined> {
  const history = await client.workflow.getHandle(want.requestId, runId).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  if (!started) return 'its history has no start event';
  if (started.workflowType?.name !== APPROVAL_WORKFLOW) return `it runs workflow type ${String(started.workflowType?.name)}, not ${APPROVAL_WORKFLOW}`;
  if (started.taskQueue?.name !== taskQueue) return `it runs on task queue ${String(started.taskQueue?.name)}, not Airlock's ${taskQueue}`;
  const payload = started.input?.payloads?.[0];
  if (!payload) return 'it has no input';
  let got: ApprovalInput | undefined;
  try {
    got = client.workflow.options.loadedDataConverter.payloadConverter.fromPayload<ApprovalInput>(payload);
  } catch {
    return 'its input cannot be decoded';
  }
  return runInputMismatch(want, got);
}
