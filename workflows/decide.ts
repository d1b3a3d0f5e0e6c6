// Submits one signed human decision to an approval workflow as an Update (the local CLI, Slack and
// Teams all come through here; each signs first, see decision-proof.ts). The workflow itself
// audits every attempt that reaches its handler (accepted as `approval.decision`, refused as
// `approval.decision-refused`), whoever sent it; this side audits only what never got there (the
// validator's refusals, which Temporal keeps nowhere, an unknown request, an unreachable Temporal).
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { DecisionRequest, DecisionResult } from '../bots/channel.ts';
import type { Store } from '../gateway/recording/store.ts';
import { APPROVAL_WORKFLOW, decideUpdate, stateQuery, type ApprovalResult, type ApprovalView } from './definitions.ts';
import { DEFAULT_DECISION_DEADLINE_MS } from './decision-proof.ts';

/** After the proof's deadline, how long an answer already on its way may take to arrive. */
const ANSWER_MARGIN_MS = 2_000;

export type { DecisionRequest, DecisionResult };

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Why a request that the update could not reach is not decidable. */
async function whyNotFound(client: Client, requestId: string): Promise<string> {
  try {
    const handle = client.workflow.getHandle(requestId);
    const d = await handle.describe();
    if (d.status.name === 'RUNNING') return `request ${requestId} is not accepting decisions right now; try again`;
    if (d.status.name === 'COMPLETED') {
      const r = (await handle.result()) as ApprovalResult;
      const who = r.outcome === 'approved' ? ` by ${r.approvers.join(', ')}` : r.rejectedBy ? ` by ${r.rejectedBy}` : '';
      return `request ${requestId} is no longer pending (${r.outcome}${who})`;
    }
    return `request ${requestId} is no longer pending (${d.status.name.toLowerCase()})`;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return `no approval request ${requestId}`;
    return `request ${requestId}: ${messageOf(err)}`;
  }
}

export async function submitDecision(client: Client, store: Store, d: DecisionRequest): Promise<DecisionResult> {
  const { requestId, ...args } = d;
  const detail = { decision: d.decision, via: d.via, approverGroups: d.approverGroups, reason: d.reason, signed: d.proof !== undefined, path: 'client' };
  const refused = (error: string): DecisionResult => {
    store.recordAudit({ at: new Date(), kind: 'approval.decision-refused', subject: requestId, actor: d.approver, detail: { ...detail, error } });
    return { ok: false, error };
  };
  if (!requestId.trim()) return refused('a request id is required');
  // The proof stops counting at notAfter: wait no longer than that (plus a margin for the answer),
  // so "not applied" is the truth even when no worker is running to apply or refuse it.
  const notAfter = d.proof?.notAfter ?? Date.now() + DEFAULT_DECISION_DEADLINE_MS;
  const giveUpAt = Math.max(notAfter, Date.now()) + ANSWER_MARGIN_MS;
  try {
    const view = await client.connection.withDeadline(giveUpAt, () => client.workflow.getHandle(requestId).executeUpdate(decideUpdate, { args: [args] }));
    return { ok: true, view };
  } catch (err) {
    if (Date.now() >= giveUpAt - 50) {
      const ms = notAfter - (d.proof?.signedAt ?? notAfter - DEFAULT_DECISION_DEADLINE_MS);
      const secs = (ms / 1000).toFixed(ms % 1000 ? 1 : 0);
      return refused(`no Airlock worker answered within ${secs} s (is \`airlock worker\` running and connected to Temporal?): the decision was not applied, and it cannot apply later (it expired at ${new Date(notAfter).toISOString()})`);
    }
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause;
      // The handler's refusal is already audited by the workflow; the validator's is not.
      if (cause instanceof ApplicationFailure && cause.type === 'DecisionRefused') return { ok: false, error: messageOf(cause) };
      return refused(cause ? messageOf(cause) : messageOf(err));
    }
    if (err instanceof WorkflowNotFoundError) return refused(await whyNotFound(client, requestId));
    return refused(`could not submit the decision for ${requestId}: ${messageOf(err)}`);
  }
}

/** Pending approval requests on a task queue, for `/airlock pending` (visibility is eventually consistent). */
export async function listPending(client: Client, taskQueue: string, limit = 50): Promise<ApprovalView[]> {
  const views: ApprovalView[] = [];
  const query = `WorkflowType = "${APPROVAL_WORKFLOW}" AND ExecutionStatus = "Running" AND TaskQueue = "${taskQueue.replace(/["\\]/g, '')}"`;
  for await (const w of client.workflow.list({ query, pageSize: limit })) {
    const v = await client.workflow
      .getHandle(w.workflowId, w.runId)
      .query(stateQuery)
      .catch(() => undefined);
    if (v && v.status === 'pending') views.push(v);
    if (views.length >= limit) break;
  }
  return views;
}
