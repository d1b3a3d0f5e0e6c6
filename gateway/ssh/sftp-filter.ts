// A transparent SFTP (v3, draft-ietf-secsh-filexfer-02 + OpenSSH extensions) packet filter.
//
// Bytes are relayed as they arrive; only requests that name a path (open, remove, rename,
// mkdir, ...) are buffered whole and put to the policy. READ/WRITE data packets stream through
// without being copied or re-encoded, so file contents are never altered and scp/sftp run near
// line rate. A denied request never reaches the server: the filter answers it itself with
// SSH_FX_PERMISSION_DENIED and a message naming the rule, injected between server packets.
// Held (review) requests stall the client->server direction only, in order.
//
// Every path is decided as an absolute path: relative ones are resolved against the home
// directory the server reports for REALPATH "." (asked by the filter itself when the client has
// not asked yet). With `resolveOnServer` (the gateway's setting), each path is also resolved on
// the server with REALPATH (its parent's, when it does not exist yet) and the resolved path is
// decided too, so a symlink an agent created cannot point a permitted path at a denied one; a
// dangling symlink is refused for anything but remove/rename. Two-path requests (rename, link,
// symlink) decide both paths; FSETSTAT decides `setstat` on the path its handle was opened with.
// Hard links cannot be traced back (see docs/threat-model.md).
import { posix } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';

export type SftpAction = 'read' | 'write' | 'list' | 'remove' | 'mkdir' | 'rmdir' | 'rename' | 'link' | 'setstat';

export interface SftpRequest {
  action: SftpAction;
  /** Absolute (normalized) paths; `~/x` when the home directory is not known yet. */
  paths: string[];
}

export type SftpVerdict = { allow: true } | { allow: false; message: string; code?: number };

export interface SftpFilterOptions {
  /** Resolve every path with REALPATH on the server before deciding (symlinks). */
  resolveOnServer?: boolean;
  /** Largest packet (length field) a client may send; a larger one is a protocol error (ssh.listen.maxMessageBytes). */
  maxPacketBytes?: number;
}

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
const INSPECT = new Set<number>([T.OPEN, T.CLOSE, T.SETSTAT, T.FSETSTAT, T.OPENDIR, T.REMOVE, T.MKDIR, T.RMDIR, T.REALPATH, T.RENAME, T.SYMLINK, T.EXTENDED]);
/** Request ids the filter uses for its own requests to the server; a client using them is cut off. */
const OWN_ID_BASE = 0xffff0000;
/** Actions on the link itself (a dangling symlink may be removed or renamed). */
const ON_LINK = new Set<SftpAction>(['remove', 'rename', 'link']);
const MAX_HANDLES = 4096;
/** OpenSSH extensions that touch no path, or only handles already authorized at open. */
const PASS_EXTENSIONS = new Set(['statvfs@openssh.com', 'fstatvfs@openssh.com', 'fsync@openssh.com', 'limits@openssh.com', 'expand-path@openssh.com', 'home-directory', 'copy-data', 'users-groups-by-id@openssh.com']);
/** Buffered per direction of the filter (see the constructor). */
const STREAM_HIGH_WATER_MARK = 1024 * 1024;
/** A path request larger than this is not a path request. */
const MAX_INSPECTED = 64 * 1024;
const EMPTY = Buffer.alloc(0);

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
    return this.bytes().toString('utf8');
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.off + n > this.buf.length) throw new RangeError('string past end of packet');
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
}

class PathError extends Error {}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([u32(b.length), b]);
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
  /** A packet exceeded maxPacketBytes (then onProtocolError follows). */
  onLimit?(limit: 'maxMessageBytes', size: number): void;
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

  /** The filter's own requests to the server, by id, waiting for their answer packet. */
  private readonly ownRequests = new Map<number, (packet: Buffer) => void>();
  private nextOwnId = OWN_ID_BASE;
  /** OPEN/OPENDIR requests allowed, by id, until the server answers with a handle. */
  private readonly opening = new Map<number, string[]>();
  /** Open handles (hex) and the paths they were opened with (as asked, as resolved), for FSETSTAT. */
  private readonly handles = new Map<string, string[]>();

  constructor(
    private readonly policy: SftpPolicy,
    private readonly events: SftpFilterEvents = {},
    private readonly options: SftpFilterOptions = {},
  ) {
    const self = this;
    // Streams of 32 KiB SSH packets: with the default 16 KiB high-water mark every chunk would
    // pause and resume the channel (a drain round per packet). Bounded: this much per direction.
    const highWaterMark = STREAM_HIGH_WATER_MARK;
    this.clientToServer = new Transform({
      highWaterMark,
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        self.bytesFromClient += chunk.length;
        const buf = self.cPending.length ? Buffer.concat([self.cPending, chunk]) : chunk;
        self.cPending = EMPTY;
        self.fromClient(this, buf, 0, cb);
      },
    });
    this.serverToClient = new Transform({
      highWaterMark,
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        self.fromServer(this, chunk);
        cb();
      },
    });
  }

  // Client-stream framing state: a partial header or inspected request kept, or bytes of a
  // pass-through packet still to relay.
  private cPending: Buffer = EMPTY;
  private cRemaining = 0;
  // Server-stream framing state, the same.
  private sPending: Buffer = EMPTY;
  private sRemaining = 0;

  /**
   * Relays what the server sent. Pass-through bytes are pushed as one piece per chunk (up to the
   * next packet the filter consumes itself), not one piece per SFTP packet boundary: each piece
   * becomes its own SSH packet towards the client, and SFTP packets do not line up with SSH ones.
   */
  private fromServer(out: Transform, chunk: Buffer): void {
    const buf = this.sPending.length ? Buffer.concat([this.sPending, chunk]) : chunk;
    this.sPending = EMPTY;
    let from = 0; // bytes [from, p) are relayed unchanged
    let p = 0;
    while (p < buf.length) {
      if (this.sRemaining > 0) {
        const n = Math.min(this.sRemaining, buf.length - p);
        this.sRemaining -= n;
        p += n;
        continue;
      }
      if (buf.length - p < 9) {
        this.sPending = buf.subarray(p);
        break;
      }
      const len = buf.readUInt32BE(p);
      const type = buf[p + 4];
      const id = buf.readUInt32BE(p + 5);
      const own = this.ownRequests.get(id);
      if (own || (type === T.HANDLE && this.opening.has(id) && len <= MAX_INSPECTED)) {
        if (buf.length - p < 4 + len) {
          this.sPending = buf.subarray(p);
          break;
        }
        const packet = buf.subarray(p, p + 4 + len);
        if (own) {
          // An answer to the filter's own request: consumed here, never relayed.
          this.relayToClient(out, buf, from, p);
          this.ownRequests.delete(id);
          p += 4 + len;
          from = p;
          own(Buffer.from(packet));
          continue;
        }
        try {
          const handle = new Reader(packet.subarray(9)).bytes().toString('hex');
          if (this.handles.size < MAX_HANDLES) this.handles.set(handle, this.opening.get(id) as string[]);
        } catch {
          // malformed: FSETSTAT on it will be refused as unknown
        }
        this.opening.delete(id);
      } else if (type === T.STATUS && this.opening.has(id)) {
        this.opening.delete(id);
      }
      if (type === T.NAME && this.homeRequests.has(id) && len <= MAX_INSPECTED) {
        if (buf.length - p < 4 + len) {
          this.sPending = buf.subarray(p);
          break;
        }
        this.homeRequests.delete(id);
        try {
          const r = new Reader(buf.subarray(p + 9, p + 4 + len));
          if (r.u32() >= 1) this.home = posix.normalize(r.str());
        } catch {
          // Malformed answer: relative paths stay unresolved (`~/...`).
        }
      } else if (type === T.STATUS) {
        this.homeRequests.delete(id);
      }
      this.sRemaining = 4 + len;
    }
    this.relayToClient(out, buf, from, p);
    if (this.serverIdle()) this.flushInjected(out);
  }

  private relayToClient(out: Transform, buf: Buffer, from: number, to: number): void {
    if (to <= from) return;
    out.push(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
    this.bytesToClient += to - from;
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

  /** Sends a request of the filter's own to the server; resolves with the answer packet. */
  private ask(out: Transform, type: number, ...args: Buffer[]): Promise<Buffer> {
    const id = this.nextOwnId;
    this.nextOwnId = this.nextOwnId >= 0xfffffff0 ? OWN_ID_BASE : this.nextOwnId + 1;
    const body = Buffer.concat([Buffer.from([type]), u32(id), ...args]);
    return new Promise((resolve) => {
      this.ownRequests.set(id, resolve);
      out.push(Buffer.concat([u32(body.length), body]));
    });
  }

  /** REALPATH on the server: the canonical path, or undefined when it fails (no such file ...). */
  private async realpath(out: Transform, p: string): Promise<string | undefined> {
    const answer = await this.ask(out, T.REALPATH, str(p));
    if (answer.readUInt8(4) !== T.NAME) return undefined;
    const r = new Reader(answer.subarray(9));
    if (r.u32() < 1) return undefined;
    return posix.normalize(r.str());
  }

  /** LSTAT on the server: whether something (a dangling symlink, say) exists at p. */
  private async exists(out: Transform, p: string): Promise<boolean> {
    const answer = await this.ask(out, T.LSTAT, str(p));
    return answer.readUInt8(4) === T.ATTRS;
  }

  /** The absolute, normalized path; asks the server for the home directory when it is not known. */
  private async absolute(out: Transform, p: string): Promise<string> {
    if (p.startsWith('/')) return posix.normalize(p);
    if (this.home === undefined && this.options.resolveOnServer) this.home = await this.realpath(out, '.');
    if (this.home === undefined) throw new PathError(`the relative path ${JSON.stringify(p)} cannot be resolved before the home directory is known`);
    return posix.resolve(this.home, p || '.');
  }

  /**
   * The paths to decide for one path argument: the absolute path, and (resolveOnServer) what the
   * server resolves it to, its parent's resolution when it does not exist yet.
   */
  private async pathsFor(out: Transform, action: SftpAction, raw: string): Promise<string[]> {
    const abs = await this.absolute(out, raw);
    if (!this.options.resolveOnServer) return [abs];
    let resolved = await this.realpath(out, abs);
    if (resolved === undefined) {
      if (!ON_LINK.has(action) && (await this.exists(out, abs))) {
        throw new PathError(`${abs} is a symbolic link whose target cannot be resolved, so it cannot be checked`);
      }
      const parent = await this.realpath(out, posix.dirname(abs));
      resolved = parent === undefined ? undefined : posix.join(parent, posix.basename(abs));
    }
    return resolved === undefined || resolved === abs ? [abs] : [abs, resolved];
  }

  /** What a whole inspected packet asks for; `null` passes it on untouched. */
  private async classify(out: Transform, type: number, body: Buffer, id: number): Promise<SftpRequest | null | 'unsupported'> {
    const r = new Reader(body);
    r.u8();
    r.u32(); // id
    const one = async (action: SftpAction, raw: string): Promise<SftpRequest> => ({ action, paths: await this.pathsFor(out, action, raw) });
    const two = async (action: SftpAction, a: string, b: string): Promise<SftpRequest> => ({ action, paths: [...(await this.pathsFor(out, action, a)), ...(await this.pathsFor(out, action, b))] });
    switch (type) {
      case T.OPEN: {
        const raw = r.str();
        const flags = r.u32();
        const req = await one(flags & (PF_WRITE | PF_APPEND | PF_CREAT | PF_TRUNC) ? 'write' : 'read', raw);
        this.opening.set(id, req.paths);
        return req;
      }
      case T.OPENDIR: {
        const req = await one('list', r.str());
        this.opening.set(id, req.paths);
        return req;
      }
      case T.CLOSE:
        this.handles.delete(r.bytes().toString('hex'));
        return null;
      case T.REMOVE:
        return one('remove', r.str());
      case T.MKDIR:
        return one('mkdir', r.str());
      case T.RMDIR:
        return one('rmdir', r.str());
      case T.SETSTAT:
        return one('setstat', r.str());
      case T.FSETSTAT: {
        const paths = this.handles.get(r.bytes().toString('hex'));
        if (paths === undefined) throw new PathError('FSETSTAT on a handle the gateway did not see opened');
        return { action: 'setstat', paths };
      }
      case T.RENAME:
        return two('rename', r.str(), r.str());
      case T.SYMLINK: {
        // OpenSSH order: target (the link's contents), then the link's own path. A relative
        // target is relative to the link's directory.
        const target = r.str();
        const link = await this.absolute(out, r.str());
        return two('link', target.startsWith('/') ? target : posix.join(posix.dirname(link), target), link);
      }
      case T.REALPATH: {
        const p = r.str();
        if (p === '.' || p === '') this.homeRequests.add(id);
        return null;
      }
      case T.EXTENDED: {
        const name = r.str();
        if (name === 'posix-rename@openssh.com') return two('rename', r.str(), r.str());
        if (name === 'hardlink@openssh.com') return two('link', r.str(), r.str());
        if (name === 'lsetstat@openssh.com') return one('setstat', r.str());
        if (PASS_EXTENSIONS.has(name)) return null;
        return 'unsupported';
      }
      default:
        return null;
    }
  }

  /**
   * Relays what the client sent, from offset `p` of `buf`, then calls `done`. Pass-through bytes
   * (READ, WRITE, ...) are relayed synchronously, as one piece per chunk; only a request the
   * filter inspects goes through a promise (its decision), after which relaying resumes behind it.
   */
  private fromClient(out: Transform, buf: Buffer, p: number, done: TransformCallback): void {
    const from = p; // bytes [from, p) are relayed unchanged
    try {
      while (p < buf.length) {
        if (this.cRemaining > 0) {
          const n = Math.min(this.cRemaining, buf.length - p);
          this.cRemaining -= n;
          p += n;
          continue;
        }
        if (buf.length - p < 9) {
          this.cPending = buf.subarray(p);
          break;
        }
        const len = buf.readUInt32BE(p);
        const type = buf[p + 4];
        if (len < 5) {
          this.relayToServer(out, buf, from, p);
          this.events.onProtocolError?.(`SFTP packet of ${len} bytes`);
          throw new Error(`SFTP packet of ${len} bytes`);
        }
        if (this.options.maxPacketBytes !== undefined && len > this.options.maxPacketBytes) {
          // Refused on the declared length, before any of it is relayed or buffered.
          this.relayToServer(out, buf, from, p);
          this.events.onLimit?.('maxMessageBytes', len);
          this.events.onProtocolError?.(`SFTP packet of ${len} bytes exceeds the ${this.options.maxPacketBytes}-byte limit (ssh.listen.maxMessageBytes)`);
          throw new Error(`SFTP packet of ${len} bytes exceeds the ${this.options.maxPacketBytes}-byte limit`);
        }
        if (type !== T.INIT && buf.readUInt32BE(p + 5) >= OWN_ID_BASE) {
          this.relayToServer(out, buf, from, p);
          this.events.onProtocolError?.('SFTP request id in the range the gateway reserves');
          throw new Error('SFTP request id in the range the gateway reserves');
        }
        if (!INSPECT.has(type)) {
          this.cRemaining = 4 + len;
          continue;
        }
        if (len > MAX_INSPECTED) {
          this.relayToServer(out, buf, from, p);
          this.events.onProtocolError?.(`SFTP request type ${type} of ${len} bytes is too large`);
          throw new Error(`SFTP request type ${type} of ${len} bytes is too large`);
        }
        if (buf.length - p < 4 + len) {
          this.cPending = buf.subarray(p);
          break;
        }
        // Everything before the request goes first; the request waits for its decision.
        this.relayToServer(out, buf, from, p);
        const next = p + 4 + len;
        this.inspect(out, type, buf.subarray(p, next)).then(
          () => this.fromClient(out, buf, next, done),
          (err: Error) => done(err),
        );
        return;
      }
    } catch (err) {
      return done(err as Error);
    }
    this.relayToServer(out, buf, from, p);
    done();
  }

  private relayToServer(out: Transform, buf: Buffer, from: number, to: number): void {
    if (to > from) out.push(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
  }

  /** Decides one whole inspected request: relayed, or answered by the filter itself. */
  private async inspect(out: Transform, type: number, packet: Buffer): Promise<void> {
    const body = packet.subarray(4);
    const id = body.length >= 5 ? body.readUInt32BE(1) : 0;
    let req: SftpRequest | null | 'unsupported';
    try {
      req = await this.classify(out, type, body, id);
    } catch (err) {
      // A truncated path request, or a path that cannot be resolved, cannot be checked: refused, not forwarded.
      this.opening.delete(id);
      const why = err instanceof PathError ? err.message : 'malformed SFTP request';
      this.inject(statusPacket(id, err instanceof PathError ? FX_PERMISSION_DENIED : FX_FAILURE, `airlock: ${why}`));
      return;
    }
    if (req === null) {
      out.push(packet);
      return;
    }
    if (req === 'unsupported') {
      this.inject(statusPacket(id, FX_OP_UNSUPPORTED, 'airlock: this SFTP extension is not supported through the gateway'));
      return;
    }
    // Each path is its own decision (a rule on /etc/ sees the second path of a rename too).
    let verdict: SftpVerdict = { allow: true };
    for (const path of [...new Set(req.paths)]) {
      const one: SftpRequest = { action: req.action, paths: [path] };
      verdict = await this.policy.decide(one);
      this.events.onDecided?.(one, verdict);
      if (!verdict.allow) break;
    }
    if (verdict.allow) out.push(packet);
    else {
      this.opening.delete(id);
      this.inject(statusPacket(id, verdict.code ?? FX_PERMISSION_DENIED, verdict.message));
    }
  }
}
