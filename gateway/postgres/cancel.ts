// Query cancellation. Clients get Airlock's own (pid, secret) in BackendKeyData, never the
// upstream's: a client must not be able to cancel other people's upstream backends, and the
// upstream host stays private. A CancelRequest on a fresh connection is looked up here and
// re-sent to the right upstream with its real key. Unknown keys are ignored silently, as PG does.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { connect } from 'node:net';
import { cancelRequest } from './messages.ts';

export interface UpstreamKey {
  host: string;
  port: number;
  pid: number;
  secret: Buffer;
  /**
   * Pooled sessions (upstream-lease.ts): cancels whatever backend serves the session at that
   * moment, or nothing when it holds none; host/pid/secret are then unused.
   */
  cancel?: () => Promise<Error | undefined>;
}

interface Entry {
  secret: Buffer;
  upstream: UpstreamKey;
  /** The session's own handling of a cancel (a held statement never reached the upstream). */
  intercept?: () => boolean;
}

/**
 * With several gateway workers (gateway/cluster), a CancelRequest arrives on a new connection that
 * any worker may accept. The worker index is then the low 8 bits of every key's pid, and a request
 * for another worker's key is forwarded to it (through the primary) unchecked: only the owning
 * worker holds the secret and checks it.
 */
export interface CancelRouting {
  /** This worker's index, 1..255. */
  worker: number;
  forward(pid: number, secret: Buffer): void;
}

/** The worker a client-facing cancel key belongs to (0: none, a single-process gateway's key). */
export function cancelKeyWorker(pid: number): number {
  return pid & 0xff;
}

export class CancelRegistry {
  private readonly byPid = new Map<number, Entry>();

  constructor(private readonly routing?: CancelRouting) {}

  /** Registers a session and returns the key to hand to its client. */
  register(upstream: UpstreamKey): { pid: number; secret: Buffer } {
    let pid: number;
    do pid = this.routing ? (randomInt(1, 1 << 23) << 8) | this.routing.worker : randomInt(1, 0x7fffffff);
    while (this.byPid.has(pid));
    const secret = randomBytes(4);
    this.byPid.set(pid, { secret, upstream });
    return { pid, secret };
  }

  unregister(pid: number): void {
    this.byPid.delete(pid);
  }

  /**
   * Lets a session handle its client's cancels first: `intercept` returns true when it cancelled
   * something itself (a statement held for approval, which the upstream has not seen).
   */
  onCancel(pid: number, intercept: () => boolean): void {
    const e = this.byPid.get(pid);
    if (e) e.intercept = intercept;
  }

  /**
   * Acts on a client's CancelRequest: the upstream key to forward it to, or undefined when it
   * matches no session or the session handled it (a held statement was cancelled).
   */
  lookup(pid: number, secret: Buffer): UpstreamKey | undefined {
    if (this.routing && cancelKeyWorker(pid) !== this.routing.worker) {
      this.routing.forward(pid, Buffer.from(secret));
      return undefined;
    }
    const e = this.byPid.get(pid);
    if (!e || e.secret.length !== secret.length || !timingSafeEqual(e.secret, secret)) return undefined;
    if (e.intercept?.()) return undefined;
    return e.upstream;
  }
}

/** Sends a CancelRequest to an upstream server. Best effort: errors are reported, never thrown. */
export function sendCancel(key: UpstreamKey, timeoutMs = 5000): Promise<Error | undefined> {
  if (key.cancel) return key.cancel();
  return new Promise((resolve) => {
    const s = connect({ host: key.host, port: key.port });
    const done = (err?: Error) => {
      s.destroy();
      resolve(err);
    };
    s.setTimeout(timeoutMs, () => done(new Error(`cancel request to ${key.host}:${key.port} timed out`)));
    s.once('error', (err) => done(err));
    s.once('connect', () => {
      s.end(cancelRequest(key.pid, key.secret));
    });
    // The server closes the connection without answering once it has read the request.
    s.once('close', () => done());
  });
}
