// Starting (or re-attaching to) an approval workflow: one place for the id policy and the search
// attributes, used by the gateway's TemporalApprover and the tests.
import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
// Type-only: the gateway never loads workflow code, it names the workflow type.
import type { approvalWorkflow } from './approval-workflow.ts';
import { APPROVAL_WORKFLOW, type ApprovalInput } from './definitions.ts';
import { APPROVERS, CONNECTION, OUTCOME, REQUESTER } from './search-attributes.ts';

/** Slack past the deadline before Temporal itself closes a run nobody processes (no worker). */
export const EXECUTION_TIMEOUT_SLACK_MS = 10 * 60_000;

export function startApproval(client: Client, taskQueue: string, input: ApprovalInput): Promise<WorkflowHandleWithFirstExecutionRunId<typeof approvalWorkflow>> {
  return client.workflow.start<typeof approvalWorkflow>(APPROVAL_WORKFLOW, {
    workflowId: input.requestId,
    taskQueue,
    args: [input],
    // Same operation while a run is pending: join it instead of posting twice. A closed run
    // (approved past its grant, rejected, expired) does not block a fresh request.
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    workflowExecutionTimeout: input.timeoutMs + EXECUTION_TIMEOUT_SLACK_MS,
    typedSearchAttributes: [
      { key: REQUESTER, value: input.operation.identity },
      { key: CONNECTION, value: input.operation.connection },
      { key: OUTCOME, value: 'pending' },
      { key: APPROVERS, value: [] },
    ],
    staticSummary: `${input.operation.identity} on ${input.operation.connection}: ${input.operation.rule}`,
  });
}
