// A transparent SFTP (v3, draft-ietf-secsh-filexfer-02 + OpenSSH extensions) packet filter.
//
// Bytes are relayed as they arrive; only requests that name a path (open, remove, rename,
// mkdir, ...) are buffered whole and put to the policy. READ/WRITE data packets stream through
// without being copied or re-encoded, so file contents are never altered and scp/sftp run near
// line rate. A denied request never reaches the server: the filter answers it itself with
// SSH_FX_PERMISSION_DENIED and a message naming the rule, injected between server packets.
// Held (review) requests stall the client->server direction only, in order.
//
// Relative paths are resolved against the home directory the server reported for
// REALPATH "." (every OpenSSH sftp/scp client asks first). Symlinks on the server can still
// point a permitted path elsewhere: path rules are a guard rail, not a sandbox.
import { posix } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';

export type SftpAction = 'read' | 'write' | 'list' | 'remove' | 'mkdir' | 'rmdir' | 'rename' | 'link' | 'setstat';

export interface SftpRequest {
  action: SftpAction;
  /** Absolute (normalized) paths; `~/x` when the home directory is not known yet. */
  paths: string[];
}

export type SftpVerdict = { allow: true } | { allow: false; message: string; code?: number };

export interface SftpPolicy {
  decide(req: SftpRequest): Promise<SftpVerdict>;
}

const T = {
  INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, LSTAT: 7, FSTAT: 8, SETSTAT: 9, FSETSTAT: 10,
  OPENDIR: 11, READDIR: 12, REMOVE: 13, MKDIR: 14, RMDIR: 15, REALPATH: 16, STAT: 17, RENAME: 18,
  READLINK: 19, SYMLINK: 20, STATUS: 101, HANDLE: 102, DATA: 103, NAME: 104, ATTRS: 105, EXTENDED: 200, EXTENDED_REPLY: 201,
} as const;

export const FX_PERMISSION_DENIED = 3;
export const FX_FAILURE = 4;
export const FX_OP_UNSUPPORTED = 8;

const PF_WRITE = 0x02, PF_APPEND = 0x04, PF_CREAT = 0x08, PF_TRUNC = 0x10;

/** Request types the filter must see whole. */
const INSPECT = new Set<number>([T.OPEN, T.SETSTAT, T.OPENDIR, T.REMOVE, T.MKDIR, T.RMDIR, T.REALPATH, T.RENAME, T.SYMLINK, T.EXTENDED]);
/** OpenSSH extensions that touch no path, or only handles already authorized at open. */
const PASS_EXTENSIONS = new Set(['statvfs@openssh.com', 'fstatvfs@openssh.com', 'fsync@openssh.com', 'limits@openssh.com', 'expand-path@openssh.com', 'home-directory', 'copy-data', 'users-groups-by-id@openssh.com']);
/** A path request larger than this is not a path request. */
const MAX_INSPECTED = 64 * 1024;

class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.off++);
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  str(): string {
    const n = this.u32();
    if (this.off + n > this.buf.length) throw new RangeError('string past end of packet');
    const s = this.buf.toString('utf8', this.off, this.off + n);
    this.off += n;
    return s;
  }
}

export function statusPacket(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const body = Buffer.alloc(4 + 1 + 4 + 4 + 4 + msg.length + 4);
  let o = 0;
  body.writeUInt32BE(body.length - 4, o);
  o += 4;
  body.writeUInt8(T.STATUS, o++);
  body.writeUInt32BE(id, o);
  o += 4;
  body.writeUInt32BE(code, o);
  o += 4;
  body.writeUInt32BE(msg.length, o);
  o += 4;
  msg.copy(body, o);
  o += msg.length;
  body.writeUInt32BE(0, o); // empty language tag
  return body;
}

export interface SftpFilterEvents {
  /** A request the filter decided on (for recording). */
  onDecided?(req: SftpRequest, verdict: SftpVerdict): void;
  /** The client sent something that is not SFTP; the channel should be closed. */
  onProtocolError?(message: string): void;
}

export class SftpFilter {
  home: string | undefined;
  /** REALPATH "." request ids whose answer is the home directory. */
  private readonly homeRequests = new Set<number>();
  /** Answers to denied requests, waiting for a packet boundary in the server stream. */
  private readonly injected: Buffer[] = [];
  readonly clientToServer: Transform;
  readonly serverToClient: Transform;
  bytesFromClient = 0;
  bytesToClient = 0;

  constructor(
    private readonly policy: SftpPolicy,
    private readonly events: SftpFilterEvents = {},
  ) {
    const self = this;
    // client -> server
    let cPending: Buffer = Buffer.alloc(0);
    let cRemaining = 0; // bytes of a pass-through packet still to forward
    this.clientToServer = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        self.bytesFromClient += chunk.length;
        self.fromClient(this, chunk, cPending, cRemaining).then(
          (st) => {
            cPending = st.pending;
            cRemaining = st.remaining;
            cb();
          },
          (err: Error) => cb(err),
        );
      },
    });
    this.serverToClient = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        self.fromServer(this, chunk);
        cb();
      },
    });
  }

  // Server-stream framing state: a partial header kept, or bytes of a packet still to relay.
  private sPending: Buffer = Buffer.alloc(0);
  private sRemaining = 0;

  private fromServer(out: Transform, chunk: Buffer): void {
    let buf = this.sPending.length ? Buffer.concat([this.sPending, chunk]) : chunk;
    this.sPending = Buffer.alloc(0);
    while (buf.length > 0) {
      if (this.sRemaining > 0) {
        const n = Math.min(this.sRemaining, buf.length);
        out.push(buf.subarray(0, n));
        this.bytesToClient += n;
        this.sRemaining -= n;
        buf = buf.subarray(n);
        continue;
      }
      if (buf.length < 9) {
        this.sPending = buf;
        break;
      }
      const len = buf.readUInt32BE(0);
      const type = buf.readUInt8(4);
      const id = buf.readUInt32BE(5);
      if (type === T.NAME && this.homeRequests.has(id) && len <= MAX_INSPECTED) {
        if (buf.length < 4 + len) {
          this.sPending = buf;
          break;
        }
        this.homeRequests.delete(id);
        try {
          const r = new Reader(buf.subarray(9, 4 + len));
          if (r.u32() >= 1) this.home = posix.normalize(r.str());
        } catch {
          // Malformed answer: relative paths stay unresolved (`~/...`).
        }
      } else if (type === T.STATUS) {
        this.homeRequests.delete(id);
      }
      this.sRemaining = 4 + len;
    }
    if (this.serverIdle()) this.flushInjected(out);
  }

  /** The server stream is between packets, so an answer can be slipped in. */
  private serverIdle(): boolean {
    return this.sRemaining === 0 && this.sPending.length === 0;
  }

  private flushInjected(out: Transform): void {
    while (this.injected.length) {
      const p = this.injected.shift() as Buffer;
      this.bytesToClient += p.length;
      out.push(p);
    }
  }

  private inject(p: Buffer): void {
    this.injected.push(p);
    if (this.serverIdle()) this.flushInjected(this.serverToClient);
  }

  private resolvePath(p: string): string {
    if (p.startsWith('/')) return posix.normalize(p);
    if (this.home) return posix.resolve(this.home, p || '.');
    return `~/${posix.normalize(p || '.')}`.replace(/\/\.$/, '');
  }

  /** What a whole inspected packet asks for; `null` passes it on untouched. */
  private classify(type: number, body: Buffer, id: number): SftpRequest | null | 'unsupported' {
    const r = new Reader(body);
    r.u8();
    r.u32(); // id
    switch (type) {
      case T.OPEN: {
        const path = this.resolvePath(r.str());
        const flags = r.u32();
        return { action: flags & (PF_WRITE | PF_APPEND | PF_CREAT | PF_TRUNC) ? 'write' : 'read', paths: [path] };
      }
      case T.OPENDIR:
        return { action: 'list', paths: [this.resolvePath(r.str())] };
      case T.REMOVE:
        return { action: 'remove', paths: [this.resolvePath(r.str())] };
      case T.MKDIR:
        return { action: 'mkdir', paths: [this.resolvePath(r.str())] };
      case T.RMDIR:
        return { action: 'rmdir', paths: [this.resolvePath(r.str())] };
      case T.SETSTAT:
        return { action: 'setstat', paths: [this.resolvePath(r.str())] };
      case T.RENAME:
        return { action: 'rename', paths: [this.resolvePath(r.str()), this.resolvePath(r.str())] };
      case T.SYMLINK:
        return { action: 'link', paths: [this.resolvePath(r.str()), this.resolvePath(r.str())] };
      case T.REALPATH: {
        const p = r.str();
        if (p === '.' || p === '') this.homeRequests.add(id);
        return null;
      }
      case T.EXTENDED: {
        const name = r.str();
        if (name === 'posix-rename@openssh.com') return { action: 'rename', paths: [this.resolvePath(r.str()), this.resolvePath(r.str())] };
        if (name === 'hardlink@openssh.com') return { action: 'link', paths: [this.resolvePath(r.str()), this.resolvePath(r.str())] };
        if (name === 'lsetstat@openssh.com') return { action: 'setstat', paths: [this.resolvePath(r.str())] };
        if (PASS_EXTENSIONS.has(name)) return null;
        return 'unsupported';
      }
      default:
        return null;
    }
  }

  private async fromClient(out: Transform, chunk: Buffer, pending: Buffer, remaining: number): Promise<{ pending: Buffer; remaining: number }> {
    let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (buf.length > 0) {
      if (remaining > 0) {
        const n = Math.min(remaining, buf.length);
        out.push(buf.subarray(0, n));
        remaining -= n;
        buf = buf.subarray(n);
        continue;
      }
      if (buf.length < 5) return { pending: buf, remaining };
      const len = buf.readUInt32BE(0);
      const type = buf.readUInt8(4);
      if (len < 1) {
        this.events.onProtocolError?.('SFTP packet with zero length');
        throw new Error('SFTP packet with zero length');
      }
      if (!INSPECT.has(type)) {
        remaining = 4 + len;
        continue;
      }
      if (len > MAX_INSPECTED) {
        this.events.onProtocolError?.(`SFTP request type ${type} of ${len} bytes is too large`);
        throw new Error(`SFTP request type ${type} of ${len} bytes is too large`);
      }
      if (buf.length < 4 + len) return { pending: buf, remaining };
      const packet = buf.subarray(0, 4 + len);
      buf = buf.subarray(4 + len);
      const body = packet.subarray(4);
      const id = body.length >= 5 ? body.readUInt32BE(1) : 0;
      let req: SftpRequest | null | 'unsupported';
      try {
        req = this.classify(type, body, id);
      } catch {
        // A truncated path request cannot be checked, so it is refused, not forwarded.
        this.inject(statusPacket(id, FX_FAILURE, 'airlock: malformed SFTP request'));
        continue;
      }
      if (req === null) {
        out.push(packet);
        continue;
      }
      if (req === 'unsupported') {
        this.inject(statusPacket(id, FX_OP_UNSUPPORTED, 'airlock: this SFTP extension is not supported through the gateway'));
        continue;
      }
      const verdict = await this.policy.decide(req);
      this.events.onDecided?.(req, verdict);
      if (verdict.allow) out.push(packet);
      else this.inject(statusPacket(id, verdict.code ?? FX_PERMISSION_DENIED, verdict.message));
    }
    return { pending: Buffer.alloc(0), remaining };
  }
}
