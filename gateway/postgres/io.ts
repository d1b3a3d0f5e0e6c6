// Awaitable reads over a socket, for the short startup/authentication exchanges on both sides.
// After startup the socket is detached (leftover bytes returned) and handed to the session's
// FrameReader, which is the hot path.
import type { Duplex } from 'node:stream';
import { ProtocolError, describeType } from './frames.ts';

export class ClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClosedError';
  }
}

export class AsyncReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly onData = (c: Buffer) => {
    this.chunks.push(c);
    this.length += c.length;
    // Startup messages are small: a peer that floods us before we read is slowed down, not buffered.
    if (this.length > AsyncReader.HIGH_WATER) this.socket.pause();
    this.wake();
  };
  static readonly HIGH_WATER = 256 * 1024;
  private readonly onEnd = () => this.fail(new ClosedError('connection closed'));
  private readonly onError = (e: Error) => this.fail(e);

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    this.wake();
  }

  get buffered(): number {
    return this.length;
  }

  async read(n: number): Promise<Buffer> {
    while (this.length < n) {
      if (this.failure) throw this.failure;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((r) => (this.waiter = r));
    }
    if (this.length - n <= AsyncReader.HIGH_WATER && this.socket.isPaused()) this.socket.resume();
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    return out;
  }

  /** A typed message (type byte + length): returns type and body. */
  async readMessage(maxLength: number, side: string): Promise<{ type: number; body: Buffer }> {
    const h = await this.read(5);
    const len = h.readInt32BE(1);
    if (len < 4 || len > maxLength) throw new ProtocolError(`invalid ${side} message length ${len} for message type ${describeType(h[0])}`);
    const body = await this.read(len - 4);
    return { type: h[0], body };
  }

  /** Stops listening and returns whatever was received but not read. */
  detach(): Buffer {
    // Paused first: without a 'data' listener a flowing socket would drop bytes.
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.length = 0;
    return rest;
  }
}
