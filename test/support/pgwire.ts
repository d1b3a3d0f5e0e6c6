// A raw PostgreSQL wire client for tests that need exact control over the bytes: pipelines
// written in one packet, malformed frames, cancel requests. Messages are decoded by pg-protocol.
import { connect, type Socket } from 'node:net';
import { parse, serialize } from 'pg-protocol';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';

export { serialize };

export type Message = BackendMessage & { [k: string]: unknown };

export class WireClient {
  readonly messages: Message[] = [];
  closed = false;
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: Socket) {
    void parse(socket, (m) => {
      this.messages.push(m as Message);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Opens a TCP connection (no startup). */
  static open(port: number, host = '127.0.0.1'): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port });
      s.once('connect', () => resolve(new WireClient(s)));
      s.once('error', reject);
    });
  }

  /** Opens and authenticates; resolves after the first ReadyForQuery. */
  static async login(port: number, o: { user: string; password: string; database: string }): Promise<WireClient> {
    const c = await WireClient.open(port);
    c.send(serialize.startup({ user: o.user, database: o.database }));
    await c.until((m) => m.name === 'authenticationCleartextPassword');
    c.send(serialize.password(o.password));
    await c.until((m) => m.name === 'readyForQuery' || m.name === 'error');
    const err = c.messages.find((m) => m.name === 'error');
    if (err) throw new Error(`login failed: ${String(err.message)}`);
    return c;
  }

  send(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }

  /** Waits until a message matching `pred` arrives after index `from`; returns messages since `from`. */
  until(pred: (m: Message) => boolean, timeoutMs = 10_000, from = 0): Promise<Message[]> {
    return this.waitFor((slice) => slice.some(pred), timeoutMs, from);
  }

  async waitFor(check: (slice: Message[]) => boolean, timeoutMs = 10_000, from = 0): Promise<Message[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const slice = this.messages.slice(from);
      if (check(slice)) return slice;
      if (this.closed) throw new Error(`connection closed; got ${JSON.stringify(slice.map((m) => m.name))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(slice.map((m) => m.name))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends `bufs` and returns the messages received up to the `count`-th ReadyForQuery. */
  async roundtrip(bufs: Buffer[], count = 1, timeoutMs = 10_000): Promise<Message[]> {
    const from = this.messages.length;
    this.send(...bufs);
    const zs = (ms: Message[]) => ms.filter((m) => m.name === 'readyForQuery').length;
    const ms = await this.waitFor((slice) => zs(slice) >= count, timeoutMs, from);
    let n = 0;
    const end = ms.findIndex((m) => m.name === 'readyForQuery' && ++n === count);
    return ms.slice(0, end + 1);
  }

  waitClosed(timeoutMs = 10_000): Promise<void> {
    return this.until(() => false, timeoutMs).then(
      () => undefined,
      (e: Error) => {
        if (!this.closed) throw e;
      },
    );
  }

  end(): void {
    this.socket.end(serialize.end());
  }
}

/** A CancelRequest packet for the key (pid, secret) a server handed its client in BackendKeyData. */
export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  return b;
}

/** Sends bytes on a fresh connection and waits until the server closes it (how cancels are sent). */
export function sendRaw(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.end(bytes));
    s.on('error', reject);
    s.on('close', () => resolve());
  });
}
