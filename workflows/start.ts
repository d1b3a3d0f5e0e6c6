// Starting (or re-attaching to) an approval workflow: one place for the id policy, the run's
// time bounds and the search attributes, used by the gateway's TemporalApprover and the tests.
import type { Client, WorkflowHandleWithFirstExecutionRunId, WorkflowHandleWithSignaledRunId, WorkflowOptions } from '@temporalio/client';
// Type-only: the gateway never loads workflow code, it names the workflow type.
import type { approvalWorkflow } from './approval-workflow.ts';
import { APPROVAL_WORKFLOW, joinSignal, type ApprovalInput, type JoinArgs } from './definitions.ts';
import { APPROVERS, CONNECTION, OUTCOME, PROTOCOL, REQUESTER, RULE } from './search-attributes.ts';

/** Slack past the run's own bounds before Temporal itself closes a run nobody processes (no worker). */
export const EXECUTION_TIMEOUT_SLACK_MS = 10 * 60_000;
/** Mirrors the workflow's defaults: claim window after an approval, wait for result reports. */
const CLAIM_WINDOW_MS = 60_000;
const DEFAULT_RESULT_WAIT_MS = 15 * 60_000;

function options(taskQueue: string, input: ApprovalInput) {
  const afterDecision = Math.max(input.grantTtlMs ?? 0, CLAIM_WINDOW_MS) + (input.resultWaitMs ?? DEFAULT_RESULT_WAIT_MS);
  return {
    workflowId: input.requestId,
    taskQueue,
    args: [input] as [ApprovalInput],
    // Same operation while a run is open: join it instead of posting twice. A closed run
    // (rejected, expired, spent) does not block a fresh request under the same id.
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    workflowExecutionTimeout: input.timeoutMs + afterDecision + EXECUTION_TIMEOUT_SLACK_MS,
    typedSearchAttributes: [
      { key: REQUESTER, value: input.operation.identity },
      { key: CONNECTION, value: input.operation.connection },
      { key: OUTCOME, value: 'pending' },
      { key: APPROVERS, value: [] },
      { key: RULE, value: input.operation.rule },
      { key: PROTOCOL, value: input.operation.protocol },
    ],
    staticSummary: `${input.operation.identity} on ${input.operation.connection}: ${input.operation.rule}`,
  } satisfies WorkflowOptions & { args: [ApprovalInput] };
}

export function startApproval(client: Client, taskQueue: string, input: ApprovalInput): Promise<WorkflowHandleWithFirstExecutionRunId<typeof approvalWorkflow>> {
  return client.workflow.start<typeof approvalWorkflow>(APPROVAL_WORKFLOW, options(taskQueue, input));
}

/**
 * Starts the request, or joins its open run, and counts the hold as waiting, atomically (signal
 * with start): concurrent holds on several gateways end up in one run. Needs no worker.
 */
export function joinApproval(client: Client, taskQueue: string, input: ApprovalInput, join: JoinArgs, memo?: Record<string, string>): Promise<WorkflowHandleWithSignaledRunId<typeof approvalWorkflow>> {
  // The memo (e.g. the W3C `traceparent` of the hold) is kept by the run that this call starts.
  return client.workflow.signalWithStart<typeof approvalWorkflow, [JoinArgs]>(APPROVAL_WORKFLOW, { ...options(taskQueue, input), signal: joinSignal, signalArgs: [join], ...(memo ? { memo } : {}) });
}

/**
 * Starts an access request (request kind `access`, gateway/elevation/): a fresh run under a fresh
 * id. It stays open for the window (and a break-glass one until its post-incident review), so its
 * execution timeout covers the window rather than a held operation's result wait.
 */
export function startAccessRequest(client: Client, taskQueue: string, input: ApprovalInput): Promise<WorkflowHandleWithFirstExecutionRunId<typeof approvalWorkflow>> {
  const o = options(taskQueue, input);
  const { workflowExecutionTimeout: _unused, ...rest } = o;
  const bounded = input.access?.breakGlass ? {} : { workflowExecutionTimeout: input.timeoutMs + (input.access?.forMs ?? 0) + EXECUTION_TIMEOUT_SLACK_MS };
  return client.workflow.start<typeof approvalWorkflow>(APPROVAL_WORKFLOW, { ...rest, ...bounded, workflowIdConflictPolicy: 'FAIL', workflowIdReusePolicy: 'REJECT_DUPLICATE' });
}
