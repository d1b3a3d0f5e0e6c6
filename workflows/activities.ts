// Activities of the approval workflow: all chat I/O (retried by Temporal) and Airlock's own audit
// trail, which outlives Temporal's retention. Each call targets one channel kind, so a retry never
// re-posts to a channel that already succeeded.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { KeyObject } from 'node:crypto';
import type { ApprovalChannel, ApprovalView, DecisionSource, EscalationNotice } from '../bots/channel.ts';
import type { AirlockConfig } from '../gateway/config/schema.ts';
import type { Store } from '../gateway/recording/store.ts';
import { resolveApprover } from './approver-directory.ts';
import { chatFailure } from './chat-errors.ts';
import { checkProof } from './decision-proof.ts';
import type { ChannelRef, DecideArgs } from './definitions.ts';

/** What the worker verifies decisions with: its own config and the sources' public keys. */
export interface DecisionVerification {
  config: AirlockConfig;
  keys: ReadonlyMap<DecisionSource, KeyObject>;
  maxAgeMs: number;
}

export interface ActivityDeps {
  channels: ApprovalChannel[];
  store: Store;
  /** Absent: every decision is refused (no keys to verify them with). */
  decisions?: DecisionVerification;
}

/** A decision as the worker verified it, or why it does not count. */
export type VerifiedDecisionResult =
  | { ok: true; approver: string; groups: string[]; source: DecisionSource; channelUser: string; via: string; nonce: string }
  | { ok: false; error: string };

function attempt(): number {
  try {
    return Context.current().info.attempt;
  } catch {
    return 1; // called outside an activity (direct use)
  }
}

export function createActivities(deps: ActivityDeps) {
  const byKind = new Map<string, ApprovalChannel>();
  for (const c of deps.channels) {
    if (byKind.has(c.kind)) throw new Error(`two approval channels of kind ${c.kind}: each kind may be configured once`);
    byKind.set(c.kind, c);
  }
  const audit = (kind: string, subject: string, detail: Record<string, unknown>, actor?: string) =>
    deps.store.recordAudit({ at: new Date(), kind, subject, actor, detail });

  function channel(kind: string): ApprovalChannel {
    const c = byKind.get(kind);
    if (!c) {
      throw ApplicationFailure.create({
        message: `no ${kind} approval channel is configured on this worker (has: ${[...byKind.keys()].join(', ') || 'none'})`,
        type: 'ChannelNotConfigured',
        nonRetryable: true,
      });
    }
    return c;
  }

  /** Runs one chat call; audits failures with the attempt number and classifies them for retry. */
  async function chat<T>(what: string, requestId: string, kind: string, fn: (c: ApprovalChannel) => Promise<T>): Promise<T> {
    const c = channel(kind);
    try {
      return await fn(c);
    } catch (err) {
      const failure = chatFailure(err, `${what} via ${kind}`);
      audit('approval.chat-error', requestId, { channel: kind, what, attempt: attempt(), error: failure.message, retryable: !failure.nonRetryable });
      throw failure;
    }
  }

  return {
    async listChannels(): Promise<string[]> {
      return [...byKind.keys()];
    },

    async postRequest(kind: string, view: ApprovalView): Promise<ChannelRef> {
      const ref = await chat('post request', view.requestId, kind, (c) => c.post(view));
      audit('approval.posted', view.requestId, { channel: kind, ref, attempt: attempt(), deadline: view.deadline });
      return { kind, ref };
    },

    async updateMessage(r: ChannelRef, view: ApprovalView): Promise<void> {
      await chat('update message', view.requestId, r.kind, (c) => c.update(r.ref, view));
      audit('approval.message-updated', view.requestId, { channel: r.kind, status: view.status });
    },

    async escalate(r: ChannelRef, view: ApprovalView, step: EscalationNotice): Promise<void> {
      await chat('escalate', view.requestId, r.kind, (c) => c.escalate(r.ref, view, step));
      audit('approval.escalated', view.requestId, { channel: r.kind, mention: step.mention, to: step.channel });
    },

    async reply(r: ChannelRef, requestId: string, text: string): Promise<void> {
      await chat('reply', requestId, r.kind, (c) => c.reply(r.ref, text));
      audit('approval.replied', requestId, { channel: r.kind, text });
    },

    async attachLog(r: ChannelRef, requestId: string, filename: string, content: string): Promise<void> {
      await chat('attach session log', requestId, r.kind, (c) => c.attachLog(r.ref, filename, content));
      audit('approval.log-attached', requestId, { channel: r.kind, filename, bytes: Buffer.byteLength(content) });
    },

    /**
     * Verifies a decision's proof of origin and resolves its approver's groups from this worker's
     * configuration. Deterministic answers only (no throw for a bad decision), so the workflow can
     * audit the refusal; `notBefore` is the run's start (epoch ms).
     */
    async verifyDecision(requestId: string, d: DecideArgs, notBefore: number): Promise<VerifiedDecisionResult> {
      const v = deps.decisions;
      if (!v || v.keys.size === 0) return { ok: false, error: 'this worker has no decision keys configured (decisions.keys): no decision can be verified' };
      const proof = checkProof(v.keys, requestId, d, { now: Date.now(), maxAgeMs: v.maxAgeMs, notBefore });
      if (!proof.ok) return proof;
      const p = proof.proof;
      const who = resolveApprover(v.config, p.source, d.approver, p.channelUser, deps.store);
      if (!who.ok) return who;
      return { ok: true, approver: who.identity, groups: who.groups, source: p.source, channelUser: p.channelUser, via: `${p.source}:${p.channelUser}`, nonce: p.nonce };
    },

    async audit(requestId: string, kind: string, detail: Record<string, unknown>, actor?: string): Promise<void> {
      audit(kind, requestId, detail, actor);
    },
  };
}

export type ApprovalActivities = ReturnType<typeof createActivities>;
