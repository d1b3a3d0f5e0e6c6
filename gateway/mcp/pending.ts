// Tool calls that outlived their client's patience. A held call keeps running in the gateway (its
// hold keeps waiting for people, its PostgreSQL connection stays open) after the client was
// answered `pending` with the request id; `airlock_wait` (from the same identity, in this or a
// later MCP session) attaches to the same run instead of starting another one, so nothing runs
// twice and the approval stays bound to the exact call that was held.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';

/** How long a finished call's result stays available to `airlock_wait`. */
const KEEP_FINISHED_MS = 10 * 60_000;

export interface InFlight {
  identity: string;
  requestId?: string;
  /** The latest approval notice, replayed to a client that attaches later. */
  lastNotice?: string;
  readonly listeners: Set<(message: string) => void>;
  done: Promise<CallToolResult>;
  finished: boolean;
}

export class PendingCalls {
  readonly #byRequest = new Map<string, InFlight>();

  /** Makes the call findable by its approval request id (called when the id is known). */
  register(f: InFlight): void {
    if (!f.requestId) return;
    this.#byRequest.set(f.requestId, f);
    void f.done.finally(() => {
      f.finished = true;
      setTimeout(() => {
        if (this.#byRequest.get(f.requestId!) === f) this.#byRequest.delete(f.requestId!);
      }, KEEP_FINISHED_MS).unref();
    });
  }

  /** The call held under `requestId`, if `identity` made it (nobody attaches to another's call). */
  find(requestId: string, identity: string): InFlight | undefined {
    const f = this.#byRequest.get(requestId);
    return f && f.identity === identity ? f : undefined;
  }
}
