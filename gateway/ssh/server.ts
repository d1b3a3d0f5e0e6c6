// The SSH gateway: an ssh2 server in front of OpenSSH hosts.
//
// User-name scheme (one scheme, two spellings):
//   ssh -p 2222 <target>@gateway              token as password / keyboard-interactive, or a
//                                              public key registered in ssh.publicKeys
//   ssh -p 2222 <identity>+<target>@gateway   the same; the identity must be the token's (or
//                                              the key's), so a mixed-up token is caught early
// Refusals during login (bad token, unknown target, target not allowed, upstream unreachable or
// presenting the wrong host key) are explained in an SSH authentication banner, which the
// OpenSSH client prints, followed by "Permission denied".
//
// Every channel is an operation for the policy engine (protocol 'ssh'):
//   exec     kind 'exec',    text = the command line, functions = programs it runs (command.ts)
//   shell    kind 'shell',   text = 'shell'
//   sftp     kind 'sftp',    text = 'subsystem sftp' to open it, then one operation per path
//                            request: 'sftp read /p', 'sftp write /p', 'sftp remove /p', ...
//   forward  kind 'forward', text = 'direct-tcpip host:port' | 'tcpip-forward addr:port'
// Deny: one stderr line naming the rule, exit status 126; the connection stays usable.
// Review: a stderr line "approval required ... waiting", the channel is held until the approver
// decides; closing the channel or the connection cancels the request.
// Forwarding needs an allow rule that lists kind 'forward' explicitly (policy.default: allow is
// not enough). Agent and X11 forwarding are always refused.
//
// Terminal sessions (shell, or exec with a pty) are recorded as asciicast v2 files under the
// recordings directory; the file's path is in the operation's classification (`recording`).
import { elevationTagNotice, type ElevationSource } from '../elevation/registry.ts';
import { randomUUID } from 'node:crypto';
import { CONTEXT_ENV_NAMES, contextFromEnv } from '../enforce/context.ts';
import { createServer, type Socket } from 'node:net';
import { posix } from 'node:path';
import { createRequire } from 'node:module';
import ssh2, { type AuthContext, type ClientChannel, type Connection, type PseudoTtyInfo, type ServerChannel, type Session, type Client as UpstreamClient } from 'ssh2';
import type { GatewayMetrics } from '../observability/metrics.ts';
import type { Tracer } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { Approver } from '../approvals/approver.ts';
import { tokenSettings } from '../auth/settings.ts';
import { verifyToken } from '../auth/tokens.ts';
import { type LoadedConfig } from '../config/load.ts';
import type { SshTargetConfig } from '../config/schema.ts';
import { log as defaultLogger } from '../log.ts';
import type { Decision, DetectorMask } from '../policy/decision.ts';
import type { Identity, Operation, OperationKind } from '../policy/operation.ts';
import type { OperationRecord, Store } from '../recording/store.ts';
import { maskHashKey } from '../config/keys.ts';
import { bindOperation } from '../enforce/binding.ts';
import { SSH_EXIT_STATUS, type Refusal } from '../enforce/refusal.ts';
import { EnforcementSession } from '../enforce/session.ts';
import { Hasher } from '../masking/strategies.ts';
import { AsciicastWriter } from './asciicast.ts';
import { mergeDetectors, opaqueOutputMasks, OutputMasker, outputDetectors } from './output-masker.ts';
import { CommandParseError, parseCommand } from './command.ts';
import { classifyCommand } from './command-class.ts';
import { envAllowed, legacyScp } from './exec-guards.ts';
import { sshSettings, targetAllows, upstreamTarget, type SshSettings } from './settings.ts';
import { SftpFilter, type SftpRequest, type SftpVerdict } from './sftp-filter.ts';
import { connectUpstream, UpstreamError } from './upstream.ts';

/** Exit status for a command the gateway refused (denied, rejected, expired): "cannot execute". */
export const EXIT_DENIED = 126;
/** A terminal session is warned this long before its token expires (then closed at expiry). */
export const SHELL_EXPIRY_WARNING_MS = 60_000;
/** Exit status when the gateway itself failed (upstream channel could not be opened). */
export const EXIT_GATEWAY_ERROR = 255;

export interface PolicyDecider {
  decide(op: Operation): Decision;
  decideAll(ops: Operation[]): { decision: Decision; operation: Operation };
}

export interface SshGatewayOptions {
  config: LoadedConfig;
  /** A PolicyEngine. */
  policy: PolicyDecider;
  /** Just-in-time elevation windows (gateway/elevation/); none when absent. */
  elevations?: ElevationSource;
  store: Store;
  approver: Approver;
  /** Keys the digest approvals bind to (app.ts approvalBindingKey). */
  bindingKey: string;
  logger?: Logger;
  /** Override ssh.listen host/port (tests, the demo). Port 0 picks a free port. */
  host?: string;
  port?: number;
  /** Override where asciicast files go. */
  recordingsDir?: string;
  /** Time to connect and log in upstream. Default 10 s. */
  upstreamTimeoutMs?: number;
  /** Prometheus metrics, counted in the enforcement seam. */
  metrics?: GatewayMetrics;
  /** OpenTelemetry tracer (observability.tracing); none = tracing off. */
  tracer?: Tracer;
}

export interface SshGateway {
  host: string;
  port: number;
  hostKeyFingerprint: string;
  /** `ssh-ed25519 AAAA...`, for a known_hosts line. */
  hostPublicKey: string;
  recordingsDir: string;
  /** Open client connections. */
  connections(): number;
  close(): Promise<void>;
}

const { Server } = ssh2;

// ---------------------------------------------------------------- auth banner

const require = createRequire(import.meta.url);
const USERAUTH_BANNER = 53;

interface ProtocolInternals {
  _packetRW: { write: { allocStart: number; alloc(n: number): Buffer; finalize(b: Buffer): Buffer } };
}

/**
 * Sends SSH_MSG_USERAUTH_BANNER (RFC 4252 §5.4), which may come at any point before
 * authentication succeeds; OpenSSH prints it on stderr. ssh2 only sends a fixed banner at the
 * start, so this uses its packet writer. If ssh2's internals change, the refusal still
 * happens, only without the explanation.
 */
function sendBanner(conn: Connection, text: string, logger: Logger): void {
  try {
    const proto = (conn as unknown as { _protocol?: ProtocolInternals })._protocol;
    const { sendPacket } = require('ssh2/lib/protocol/utils.js') as { sendPacket: (p: unknown, b: Buffer) => boolean };
    if (!proto) return;
    const msg = Buffer.from(text.endsWith('\n') ? text.replace(/\r?\n/g, '\r\n') : `${text}\r\n`, 'utf8');
    const w = proto._packetRW.write;
    let p = w.allocStart;
    const packet = w.alloc(1 + 4 + msg.length + 4);
    packet[p++] = USERAUTH_BANNER;
    packet.writeUInt32BE(msg.length, p);
    p += 4;
    msg.copy(packet, p);
    p += msg.length;
    packet.writeUInt32BE(0, p);
    sendPacket(proto, w.finalize(packet));
  } catch (err) {
    logger.warn({ err }, 'could not send the SSH auth banner');
  }
}

// ---------------------------------------------------------------- helpers

function parseUser(username: string): { identity?: string; target: string } {
  const plus = username.indexOf('+');
  if (plus < 0) return { target: username };
  return { identity: username.slice(0, plus), target: username.slice(plus + 1) };
}

/** Waits until everything written to a channel has been handed to ssh2 (window permitting). */
function drained(ch: ServerChannel): Promise<void> {
  const parts = [ch, ch.stderr];
  return Promise.all(
    parts.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (!s.writableNeedDrain || s.destroyed) return resolve();
          const done = () => {
            s.off('drain', done);
            s.off('close', done);
            resolve();
          };
          s.on('drain', done);
          s.on('close', done);
        }),
    ),
  ).then(() => undefined);
}

function forwardAllowedByRule(loaded: LoadedConfig, d: Decision): boolean {
  if (d.action !== 'allow' && d.action !== 'mask') return false;
  if (!d.rule) return false;
  const rule = loaded.config.policy.rules.find((r) => r.name === d.rule);
  return !!rule?.match.kinds?.some((k) => k.toLowerCase() === 'forward');
}

function ruleRecordsInput(loaded: LoadedConfig, d: Decision): boolean {
  if (d.action === 'deny' || !d.rule) return false;
  return loaded.config.policy.rules.find((r) => r.name === d.rule)?.recordInput === true;
}

// ---------------------------------------------------------------- per connection

/** Not run: why, in the seam's words (the exit status follows from its kind). */
interface Refused {
  refused: string;
  refusal?: Refusal;
  decision: Decision;
  approval?: OperationRecord['approval'];
}

interface Authorized {
  decision: Decision;
  approval?: OperationRecord['approval'];
}

class SshConnection {
  readonly id = randomUUID();
  identity!: Identity;
  target!: SshTargetConfig;
  upstream!: UpstreamClient;
  /** This connection in the enforcement seam (set at login). */
  enforce!: EnforcementSession;
  private channels = 0;
  /** Session channels open right now. */
  private open = 0;
  private ended = false;
  private readonly abort = new AbortController();
  bytesToClient = 0;
  bytesFromClient = 0;
  private readonly remoteForwards = new Set<string>();
  private refused = false;
  /** Token logins live no longer than their token: no new operation after this. */
  private tokenExpiresAt: Date | undefined;
  private tokenId: string | undefined;
  private relayingRemoteForwards = false;

  constructor(
    readonly g: GatewayContext,
    readonly conn: Connection,
    readonly clientAddress: string,
  ) {}

  get logger(): Logger {
    return this.g.logger;
  }

  // ---- authentication

  onAuth(ctx: AuthContext): void {
    // Once refused with an explanation, later attempts on this connection are refused quietly.
    if (this.refused) return ctx.reject([]);
    const { identity: hint, target } = parseUser(ctx.username);
    const methods: Array<'publickey' | 'password' | 'keyboard-interactive'> = ['publickey', 'password', 'keyboard-interactive'];
    switch (ctx.method) {
      case 'password':
        this.tokenLogin(ctx, ctx.password, hint, target).catch((err: Error) => this.loginFailed(ctx, err));
        return;
      case 'keyboard-interactive':
        ctx.prompt([{ prompt: 'Airlock token: ', echo: false }], 'Airlock', `Paste the Airlock token for ${ctx.username}`, (answers) => {
          this.tokenLogin(ctx, answers[0] ?? '', hint, target).catch((err: Error) => this.loginFailed(ctx, err));
        });
        return;
      case 'publickey': {
        const entry = this.g.settings.publicKeys.find((k) => k.blob.equals(ctx.key.data));
        if (!entry) return ctx.reject(methods);
        if (!ctx.signature || !ctx.blob) return ctx.accept(); // "would this key do?" - yes; now sign
        if (!entry.key.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) return ctx.reject(methods);
        if (hint && hint !== entry.identity.name) return this.refuse(ctx, `the key ${entry.fingerprint} belongs to ${entry.identity.name}, not ${hint}`);
        this.admit(ctx, entry.identity, target, `publickey ${entry.fingerprint}`).catch((err: Error) => this.loginFailed(ctx, err));
        return;
      }
      default:
        ctx.reject(methods);
    }
  }

  private loginFailed(ctx: AuthContext, err: Error): void {
    this.logger.error({ err, clientAddress: this.clientAddress }, 'ssh login failed inside Airlock');
    try {
      this.refuse(ctx, 'Airlock could not complete the login (see the gateway log)');
    } catch {
      // the client is gone
    }
  }

  private refuse(ctx: AuthContext, why: string): void {
    this.logger.info({ clientAddress: this.clientAddress, user: ctx.username, reason: why }, 'ssh login refused');
    this.g.audit('ssh.refused', ctx.username, { clientAddress: this.clientAddress, user: ctx.username, reason: why });
    this.refused = true;
    sendBanner(this.conn, `airlock: ${why}`, this.logger);
    // No methods left: a token that failed once will not pass on a second try.
    ctx.reject([]);
  }

  private async tokenLogin(ctx: AuthContext, token: string, hint: string | undefined, target: string): Promise<void> {
    let id: Identity;
    try {
      const v = await verifyToken(this.g.tokens, token.trim());
      id = { name: v.name, groups: v.groups, ...(v.owner ? { owner: v.owner } : {}) };
      this.tokenExpiresAt = v.expiresAt;
      this.tokenId = v.tokenId;
    } catch (err) {
      return this.refuse(ctx, `authentication failed: ${(err as Error).message}`);
    }
    if (hint && hint !== id.name) return this.refuse(ctx, `the token is for ${id.name}, but the user name says ${hint}`);
    await this.admit(ctx, id, target, 'token');
  }

  private async admit(ctx: AuthContext, id: Identity, targetName: string, how: string): Promise<void> {
    const target = this.g.settings.targets.get(targetName);
    if (!target) {
      const names = [...this.g.settings.targets.values()].filter((t) => targetAllows(t, id)).map((t) => t.name);
      return this.refuse(ctx, `unknown target ${JSON.stringify(targetName)}${names.length ? ` (targets you may use: ${names.join(', ')})` : ''}; log in as <target>@ or <identity>+<target>@`);
    }
    if (!targetAllows(target, id)) return this.refuse(ctx, `${id.name} is not allowed to use target ${target.name}`);
    let up: UpstreamClient;
    try {
      up = await connectUpstream(upstreamTarget(this.g.loaded, target), this.g.upstreamTimeoutMs);
    } catch (err) {
      if (err instanceof UpstreamError) {
        this.logger.warn({ target: target.name, reason: err.reason, err: err.message }, 'ssh upstream refused');
        return this.refuse(ctx, err.message);
      }
      this.logger.error({ err, target: target.name }, 'ssh upstream credentials unavailable');
      return this.refuse(ctx, `upstream credentials for target ${target.name} are not available (see the gateway log)`);
    }
    if (this.ended) {
      up.end();
      return;
    }
    this.identity = id;
    this.target = target;
    this.upstream = up;
    this.enforce = new EnforcementSession(
      { policy: this.g.policy, approver: this.g.approver, store: this.g.store, logger: this.logger, metrics: this.g.metrics, ...(this.g.tracer ? { tracer: this.g.tracer } : {}), ...(this.g.tokens.revocations ? { revocations: this.g.tokens.revocations } : {}), ...(this.g.elevations ? { elevations: this.g.elevations } : {}) },
      { id: this.id, protocol: 'ssh', identity: id, connection: target.name, clientAddress: this.clientAddress, tokenExpiresAt: this.tokenExpiresAt, ...(this.tokenId ? { tokenId: this.tokenId } : {}) },
    );
    try {
      this.enforce.start();
    } catch (err) {
      // No audit trail, no access.
      this.logger.error({ err }, 'recording the session start failed; refusing the session');
      up.end();
      return this.refuse(ctx, 'Airlock cannot record this session, so it is refused (see the gateway log)');
    }
    up.on('error', (err: Error) => this.logger.warn({ err, session: this.id }, 'ssh upstream error'));
    up.on('close', () => this.end('upstream connection closed'));
    this.logger.info({ session: this.id, identity: id.name, target: target.name, clientAddress: this.clientAddress, how }, 'ssh session started');
    // At expiry a connection with nothing open ends; open channels finish, and new ones are refused (authorize).
    // A revocation ends the connection and its open channels at once.
    this.enforce.onTokenExpiry(() => {
      const revoked = this.enforce?.revocation;
      if (revoked) this.end(`revoked by ${revoked.by}: ${revoked.reason}`);
      else if (this.open === 0) this.end('token expired');
    });
    ctx.accept();
  }

  // ---- after login

  onReady(): void {
    this.conn.on('session', (accept) => {
      const s = accept();
      this.onSession(s);
    });
    this.conn.on('tcpip', (accept, reject, info: { srcIP: string; srcPort: number; destIP: string; destPort: number }) => {
      this.directTcpip(accept, reject, info).catch((err: Error) => {
        this.logger.error({ err, session: this.id }, 'ssh forward failed');
        reject();
      });
    });
    this.conn.on('openssh.streamlocal', (_accept: unknown, reject: () => void, info: { socketPath: string }) => {
      this.recordRefusal('forward', `direct-streamlocal ${info.socketPath}`, 'ssh-streamlocal', 'Unix socket forwarding is not supported through Airlock');
      reject();
    });
    this.conn.on('request', (accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, name: string, info: { bindAddr: string; bindPort: number }) => {
      this.globalRequest(accept, reject, name, info).catch((err: Error) => {
        this.logger.error({ err, session: this.id }, 'ssh global request failed');
        reject?.();
      });
    });
  }

  end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.abort.abort(new Error(reason));
    try {
      this.upstream?.end();
    } catch {
      // already gone
    }
    try {
      this.conn.end();
    } catch {
      // already gone
    }
    if (!this.enforce) return;
    this.enforce.end(reason, { toClient: this.bytesToClient, fromClient: this.bytesFromClient });
    this.logger.info({ session: this.id, identity: this.identity.name, target: this.target.name, reason }, 'ssh session ended');
  }

  private op(kind: OperationKind, text: string, functions: string[] = []): Operation {
    return {
      protocol: 'ssh',
      identity: this.identity,
      connection: { name: this.target.name, clientAddress: this.clientAddress, sessionId: this.id },
      kind,
      text,
      tables: [],
      functions,
    };
  }

  record(r: Omit<OperationRecord, 'sessionId' | 'seq' | 'maskedColumns'> & { maskedColumns?: string[] }): void {
    this.enforce.record({ maskedColumns: [], ...r });
  }

  private recordRefusal(kind: OperationKind, text: string, rule: string, reason: string, classification: Record<string, unknown> = {}): void {
    this.record({ at: new Date(), text, kind, classification: { target: this.target.name, ...classification }, decision: 'deny', rule, reason });
  }

  /**
   * Decides an operation through the enforcement seam, holding it for approval when the policy
   * says review. `say` writes a line to the client (stderr); `signal` aborts a pending hold.
   * Resolves with `refused` when it must not run (after telling the client why).
   */
  private async authorize(op: Operation, say: (line: string) => void, signal: AbortSignal, decision = this.enforce.decide([op]).decision): Promise<Authorized | Refused> {
    if (this.enforce.tokenExpired) {
      const refusal = this.enforce.tokenRefusal();
      say(`airlock: ${refusal.message.replace(/^Airlock: /, '')}`);
      return { refused: refusal.message, refusal, decision: { action: 'deny', rule: 'token-expired', reason: refusal.message } };
    }
    const d = decision;
    // During an elevation window every operation says so on stderr (the window is never silent).
    if (d.elevation) say(elevationTagNotice(d.elevation, this.target.name).replace(/^Airlock: /, 'airlock: '));
    if (d.action === 'deny') {
      say(`airlock: denied by policy rule ${d.rule}: ${d.reason}`);
      return { refused: d.reason, refusal: this.enforce.denial(d), decision: d };
    }
    if (d.action !== 'review') return { decision: d };
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.abort.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const h = await this.enforce.hold({
        operation: op,
        decision: d,
        binding: bindOperation(op, this.g.bindingKey),
        notify: (n) => {
          if (n.stage === 'requested') return; // one line per hold on a terminal: the posted one
          say(`airlock: ${n.stage === 'posted' ? `${n.message.replace(/^approval required: /, `approval required by rule ${d.rule} (${d.reason}): `)}...` : n.message}`);
        },
        signal: ac.signal,
      });
      if (h.approved) {
        say(`airlock: approved by ${h.approval.approvers.join(', ') || 'a standing grant'}${h.grant ? ' (grant)' : ''}; running`);
        return { decision: d, approval: h.approval };
      }
      say(`airlock: ${h.refusal.message.replace(/^Airlock: (approval )?/, '')}`);
      return { refused: h.refusal.message.replace(/^Airlock: /, ''), refusal: h.refusal, decision: d, approval: h.approval };
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.abort.signal.removeEventListener('abort', onAbort);
    }
  }

  // ---- session channels

  private onSession(s: Session): void {
    const env: Record<string, string> = {};
    let pty: PseudoTtyInfo | undefined;
    const refusedEnv: string[] = [];
    const contextEnv = new Map<string, string>();
    let running: Running | undefined;
    // Only variables the target lists in allowEnv reach the host: others (BASH_ENV, LD_PRELOAD,
    // PROMPT_COMMAND ...) would run code the audited command line does not show. The refusal is
    // recorded with the channel's operation (OpenSSH sends env without asking for a reply).
    s.on('env', (accept, reject, info) => {
      // AIRLOCK_REASON / AIRLOCK_TICKET / TRACEPARENT tell approvers why: accepted for Airlock
      // (shown, never trusted), reaching the host only when the target allows them too.
      if (CONTEXT_ENV_NAMES.has(info.key)) {
        contextEnv.set(info.key, info.val);
        this.enforce.setContext(contextFromEnv(contextEnv));
        if (envAllowed(this.target, info.key)) env[info.key] = info.val;
        return accept?.();
      }
      if (!envAllowed(this.target, info.key)) {
        if (!refusedEnv.includes(info.key)) refusedEnv.push(info.key);
        return reject?.();
      }
      env[info.key] = info.val;
      accept?.();
    });
    s.on('pty', (accept, _reject, info) => {
      pty = info;
      accept?.();
    });
    s.on('window-change', (accept, _reject, info) => {
      if (pty) Object.assign(pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      running?.resize(info.cols, info.rows, info.width, info.height);
      accept?.();
    });
    s.on('signal', (accept, _reject, info) => {
      running?.signal(info.name);
      accept?.();
    });
    s.on('auth-agent', (_accept, reject) => {
      this.recordRefusal('forward', 'auth-agent', 'ssh-agent-forwarding', 'agent forwarding is never allowed through Airlock (the gateway holds the keys)');
      reject?.();
    });
    s.on('x11', (_accept, reject) => {
      this.recordRefusal('forward', 'x11', 'ssh-x11-forwarding', 'X11 forwarding is not allowed through Airlock');
      reject?.();
    });
    s.on('exec', (accept, _reject, info) => {
      const ch = accept();
      running = new Running(this, ch, pty, env, refusedEnv);
      running.guard(running.exec(info.command));
    });
    s.on('shell', (accept) => {
      const ch = accept();
      running = new Running(this, ch, pty, env, refusedEnv);
      running.guard(running.shell());
    });
    s.on('subsystem', (accept, _reject, info) => {
      const ch = accept();
      running = new Running(this, ch, pty, env, refusedEnv);
      running.guard(info.name === 'sftp' ? running.sftp() : running.refuseSubsystem(info.name));
    });
  }

  /** A session channel opened; returns its number in this connection. */
  channelOpened(): number {
    this.open++;
    return ++this.channels;
  }

  channelClosed(): void {
    this.open--;
    if (this.open === 0 && this.tokenExpiresAt && Date.now() >= this.tokenExpiresAt.getTime()) this.end('token expired');
  }

  authorizeFor(op: Operation, say: (line: string) => void, signal: AbortSignal): ReturnType<SshConnection['authorize']> {
    return this.authorize(op, say, signal);
  }

  opFor(kind: OperationKind, text: string, functions: string[] = []): Operation {
    return this.op(kind, text, functions);
  }

  /** When the token this session logged in with expires (public-key logins: never). */
  tokenExpiry(): Date | undefined {
    return this.tokenExpiresAt;
  }

  // ---- forwarding

  private decideForward(op: Operation): Decision {
    const d = this.enforce.decide([op]).decision;
    if (d.action === 'deny' || d.action === 'review') return d;
    if (forwardAllowedByRule(this.g.loaded, d)) return d;
    return { action: 'deny', rule: 'ssh-forwarding-default-deny', reason: 'port forwarding is refused unless a policy rule with kinds: [forward] allows it' };
  }

  private async directTcpip(accept: () => ServerChannel, reject: () => void, info: { srcIP: string; srcPort: number; destIP: string; destPort: number }): Promise<void> {
    const started = Date.now();
    const op = this.op('forward', `direct-tcpip ${info.destIP}:${info.destPort}`);
    const classification = { target: this.target.name, destination: `${info.destIP}:${info.destPort}`, origin: `${info.srcIP}:${info.srcPort}` };
    const lines: string[] = [];
    const a = await this.authorize(op, (l) => lines.push(l), this.abort.signal, this.decideForward(op));
    if ('refused' in a) {
      this.logger.info({ session: this.id, destination: classification.destination, rule: a.decision.action === 'deny' || a.decision.action === 'review' ? a.decision.rule : undefined }, 'ssh forward refused');
      reject();
      const d = a.decision;
      return this.record({ at: new Date(), text: op.text, kind: 'forward', classification, decision: d.action, rule: 'rule' in d ? d.rule : undefined, reason: a.refused, approval: a.approval });
    }
    this.upstream.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, up) => {
      if (err) {
        reject();
        return this.record({ at: new Date(), text: op.text, kind: 'forward', classification, decision: a.decision.action, rule: a.decision.rule, error: `upstream refused the forward: ${err.message}`, approval: a.approval });
      }
      const ch = accept();
      let toClient = 0;
      let fromClient = 0;
      up.on('data', (d: Buffer) => (toClient += d.length));
      ch.on('data', (d: Buffer) => (fromClient += d.length));
      ch.pipe(up).pipe(ch);
      ch.on('error', () => up.close());
      up.on('error', () => ch.close());
      up.on('close', () => {
        this.bytesToClient += toClient;
        this.bytesFromClient += fromClient;
        this.record({ at: new Date(started), text: op.text, kind: 'forward', classification: { ...classification, bytesToClient: toClient, bytesFromClient: fromClient }, decision: a.decision.action, rule: a.decision.rule, bytes: toClient, durationMs: Date.now() - started, approval: a.approval });
      });
    });
  }

  private async globalRequest(accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, name: string, info: { bindAddr: string; bindPort: number }): Promise<void> {
    if (name === 'cancel-tcpip-forward') {
      const key = `${info.bindAddr}:${info.bindPort}`;
      if (!this.remoteForwards.has(key)) return reject?.();
      this.upstream.unforwardIn(info.bindAddr, info.bindPort, (err) => (err ? reject?.() : (this.remoteForwards.delete(key), accept?.())));
      return;
    }
    if (name !== 'tcpip-forward') {
      this.recordRefusal('forward', name, 'ssh-forwarding-unsupported', `${name} is not supported through Airlock`);
      return reject?.();
    }
    const op = this.op('forward', `tcpip-forward ${info.bindAddr}:${info.bindPort}`);
    const classification = { target: this.target.name, bind: `${info.bindAddr}:${info.bindPort}` };
    const a = await this.authorize(op, () => undefined, this.abort.signal, this.decideForward(op));
    if ('refused' in a) {
      const d = a.decision;
      this.record({ at: new Date(), text: op.text, kind: 'forward', classification, decision: d.action, rule: 'rule' in d ? d.rule : undefined, reason: a.refused, approval: a.approval });
      return reject?.();
    }
    if (!this.relayingRemoteForwards) {
      this.relayingRemoteForwards = true;
      this.upstream.on('tcp connection', (details, acceptUp, rejectUp) => {
        if (!this.remoteForwards.has(`${details.destIP}:${details.destPort}`)) return rejectUp();
        this.conn.forwardOut(details.destIP, details.destPort, details.srcIP, details.srcPort, (err, ch) => {
          if (err) return rejectUp();
          const up = acceptUp();
          ch.pipe(up).pipe(ch);
          ch.on('error', () => up.close());
          up.on('error', () => ch.close());
        });
      });
    }
    this.upstream.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
      this.record({ at: new Date(), text: op.text, kind: 'forward', classification: { ...classification, boundPort: port }, decision: a.decision.action, rule: a.decision.rule, error: err ? `upstream refused: ${err.message}` : undefined, approval: a.approval });
      if (err) return reject?.();
      this.remoteForwards.add(`${info.bindAddr}:${info.bindPort === 0 ? port : info.bindPort}`);
      accept?.(port);
    });
  }
}

// ---------------------------------------------------------------- one session channel

class Running {
  private up: ClientChannel | undefined;
  private cast: AsciicastWriter | undefined;
  private readonly ac = new AbortController();
  private readonly started = Date.now();
  private readonly channel: number;
  private toClient = 0;
  private fromClient = 0;
  private exit: { code?: number; signal?: string; coreDumped?: boolean; message?: string } = {};
  private readonly nl: string;

  constructor(
    private readonly c: SshConnection,
    private readonly ch: ServerChannel,
    private readonly pty: PseudoTtyInfo | undefined,
    private readonly env: Record<string, string>,
    private readonly refusedEnv: string[] = [],
  ) {
    this.channel = c.channelOpened();
    this.nl = pty ? '\r\n' : '\n';
    ch.on('error', (err: Error) => c.logger.debug({ err, session: c.id }, 'client channel error'));
    // Client closed the channel (or the connection went): cancel a hold, stop the upstream side.
    ch.on('close', () => {
      this.stopExpiryTimers();
      c.channelClosed();
      this.ac.abort();
      try {
        this.up?.close();
      } catch {
        // already closed
      }
    });
  }

  /** Any failure inside a channel handler ends that channel (status 255), never the process. */
  guard(p: Promise<void>): void {
    p.catch((err: Error) => {
      this.c.logger.error({ err, session: this.c.id }, 'ssh channel failed');
      this.say(`airlock: internal error, the operation did not complete (see the gateway log)`);
      void this.cast?.close();
      this.close(EXIT_GATEWAY_ERROR);
    });
  }

  private say = (line: string): void => {
    if (this.ch.destroyed || !this.ch.writable) return;
    const data = Buffer.from(line + this.nl);
    this.ch.stderr.write(data);
    this.toClient += data.length;
    this.cast?.output(data);
  };

  private finishRefused(op: Operation, a: Refused, classification: Record<string, unknown>): void {
    const d = a.decision;
    this.c.record({
      at: new Date(this.started),
      text: op.text,
      kind: op.kind,
      classification: { target: this.c.target.name, ...classification },
      decision: d.action,
      rule: 'rule' in d ? d.rule : undefined,
      reason: a.refused,
      durationMs: Date.now() - this.started,
      approval: a.approval,
      ...(this.ac.signal.aborted ? { error: 'not executed: the client went away while the operation was held' } : {}),
    });
    this.close(a.refusal ? SSH_EXIT_STATUS[a.refusal.kind] : EXIT_DENIED);
  }

  private close(code: number): void {
    this.c.bytesToClient += this.toClient;
    this.c.bytesFromClient += this.fromClient;
    if (this.ch.destroyed) return;
    void drained(this.ch).then(() => {
      try {
        this.ch.exit(code);
      } catch {
        // channel already closing
      }
      this.ch.end();
    });
  }

  private ptyOptions(): { rows: number; cols: number; height: number; width: number; term: string; modes: PseudoTtyInfo['modes'] } | undefined {
    const p = this.pty;
    return p ? { rows: p.rows, cols: p.cols, height: p.height, width: p.width, term: p.term, modes: p.modes } : undefined;
  }

  private startCast(op: Operation, decision: Decision): void {
    const width = this.pty?.cols || 80;
    const height = this.pty?.rows || 24;
    const env: Record<string, string> = { TERM: this.pty?.term || 'dumb' };
    const path = posix.join(this.c.g.recordingsDir, `${this.c.id}-${this.channel}.cast`);
    try {
      this.cast = new AsciicastWriter(path, { width, height, env, title: `${this.c.identity.name}@${this.c.target.name}: ${op.text}` });
      this.recordInput = this.c.target.recordInput || ruleRecordsInput(this.c.g.loaded, decision);
    } catch (err) {
      this.c.logger.error({ err, path }, 'cannot create the session recording');
      this.cast = undefined;
    }
  }

  private recordInput = false;

  resize(cols: number, rows: number, width: number, height: number): void {
    this.cast?.resize(cols, rows);
    try {
      this.up?.setWindow(rows, cols, height, width);
    } catch {
      // channel gone
    }
  }

  signal(name: string): void {
    try {
      this.up?.signal(name.replace(/^SIG/, ''));
    } catch (err) {
      this.c.logger.debug({ err, signal: name }, 'signal not relayed');
    }
  }

  /** Environment facts every channel's record carries. */
  private envFacts(): Record<string, unknown> {
    return { ...(Object.keys(this.env).length ? { env: Object.keys(this.env) } : {}), ...(this.refusedEnv.length ? { refusedEnv: [...this.refusedEnv] } : {}) };
  }

  async exec(command: string): Promise<void> {
    let facts;
    try {
      facts = parseCommand(command);
    } catch (err) {
      if (!(err instanceof CommandParseError)) throw err;
      const op = this.c.opFor('exec-complex', command);
      const reason = `the command line could not be parsed, so it cannot be checked: ${err.message}`;
      this.say(`airlock: denied by policy rule unparseable-command: ${reason}`);
      return this.finishRefused(op, { refused: reason, decision: { action: 'deny', rule: 'unparseable-command', reason } }, { parseError: err.message });
    }
    const scp = legacyScp(command);
    if (scp) {
      const op = this.c.opFor('exec-complex', command, facts.programs);
      this.say(`airlock: denied by policy rule ssh-legacy-scp: ${scp}`);
      return this.finishRefused(op, { refused: scp, decision: { action: 'deny', rule: 'ssh-legacy-scp', reason: scp } }, { legacyScp: true });
    }
    // Simple (plain argv, known program): rules see its exact programs. Complex: kind
    // exec-complex, whose programs Airlock cannot know (the shell-quote guess is for the audit only).
    const cls = classifyCommand(command);
    const op = cls.simple ? this.c.opFor('exec', command, cls.programs) : this.c.opFor('exec-complex', command, facts.programs);
    const classification = cls.simple
      ? { simple: true, argv: [cls.argv], programs: cls.programs, operators: [], pty: !!this.pty, ...this.envFacts() }
      : { simple: false, complex: cls.reason, argv: facts.commands, programs: facts.programs, operators: facts.operators, pty: !!this.pty, ...this.envFacts() };
    const a = await this.c.authorizeFor(op, this.say, this.ac.signal);
    if ('refused' in a) return this.finishRefused(op, a, classification);
    if (this.ac.signal.aborted) return this.finishRefused(op, { refused: 'client went away', decision: a.decision, approval: a.approval }, classification);
    if (this.pty) this.startCast(op, a.decision);
    const pty = this.ptyOptions();
    this.c.upstream.exec(command, { env: this.env, ...(pty ? { pty } : {}) }, (err, up) => {
      // A terminal session ends with the token, like a shell.
      if (!err && this.pty) this.closeAtTokenExpiry(up, classification);
      this.relay(op, a, classification, err, up);
    });
  }

  private expiryTimers: NodeJS.Timeout[] = [];

  private stopExpiryTimers(): void {
    for (const t of this.expiryTimers) clearTimeout(t);
    this.expiryTimers = [];
  }

  /**
   * A terminal session lives no longer than the token it was opened with: a warning line on the
   * terminal a minute before (or at once, when less is left), then the upstream channel is closed.
   */
  private closeAtTokenExpiry(up: ClientChannel, classification: Record<string, unknown>): void {
    const exp = this.c.tokenExpiry();
    if (!exp) return;
    const left = exp.getTime() - Date.now();
    const warnIn = Math.max(0, left - SHELL_EXPIRY_WARNING_MS);
    const timer = (ms: number, f: () => void) => {
      const t = setTimeout(f, Math.min(Math.max(0, ms), 2 ** 31 - 1));
      t.unref();
      this.expiryTimers.push(t);
    };
    timer(warnIn, () => {
      const secs = Math.max(0, Math.round((exp.getTime() - Date.now()) / 1000));
      this.say(`airlock: the token of this session expires in ${secs} s; this terminal session will be closed then (reconnect with a fresh token)`);
    });
    timer(left, () => {
      this.say('airlock: the token of this session has expired; closing this terminal session');
      classification.closed = 'token expired';
      try {
        up.close();
      } catch {
        // already closing
      }
    });
  }

  async shell(): Promise<void> {
    const op = this.c.opFor('shell', 'shell');
    const classification: Record<string, unknown> = { pty: !!this.pty, term: this.pty?.term, ...this.envFacts() };
    const a = await this.c.authorizeFor(op, this.say, this.ac.signal);
    if ('refused' in a) return this.finishRefused(op, a, classification);
    if (this.ac.signal.aborted) return this.finishRefused(op, { refused: 'client went away', decision: a.decision, approval: a.approval }, classification);
    this.startCast(op, a.decision);
    this.c.upstream.shell(this.ptyOptions() ?? false, { env: this.env }, (err, up) => {
      if (!err) this.closeAtTokenExpiry(up, classification);
      this.relay(op, a, classification, err, up);
    });
  }

  async refuseSubsystem(name: string): Promise<void> {
    const op = this.c.opFor('exec', `subsystem ${name}`);
    const reason = `subsystem ${name} is not supported through Airlock (only sftp)`;
    this.say(`airlock: denied by policy rule ssh-subsystem: ${reason}`);
    this.finishRefused(op, { refused: reason, decision: { action: 'deny', rule: 'ssh-subsystem', reason } }, { subsystem: name });
  }

  async sftp(): Promise<void> {
    const op = this.c.opFor('sftp', 'subsystem sftp');
    const a = await this.c.authorizeFor(op, this.say, this.ac.signal);
    if ('refused' in a) return this.finishRefused(op, a, { subsystem: 'sftp' });
    if (this.ac.signal.aborted) return this.finishRefused(op, { refused: 'client went away', decision: a.decision, approval: a.approval }, { subsystem: 'sftp' });
    const c = this.c;
    const filter = new SftpFilter({
      decide: async (req: SftpRequest): Promise<SftpVerdict> => {
        const fop = c.opFor('sftp', `sftp ${req.action} ${req.paths.join(' ')}`);
        const at = new Date();
        const fa = await c.authorizeFor(fop, this.say, this.ac.signal);
        const d = fa.decision;
        c.record({
          at,
          text: fop.text,
          kind: 'sftp',
          classification: { target: c.target.name, action: req.action, paths: req.paths },
          decision: d.action,
          rule: 'rule' in d ? d.rule : undefined,
          reason: 'refused' in fa ? fa.refused : undefined,
          durationMs: Date.now() - at.getTime(),
          approval: fa.approval,
        });
        if ('refused' in fa) return { allow: false, message: `airlock: ${d.action === 'deny' ? `denied by policy rule ${d.rule}: ${fa.refused}` : fa.refused}` };
        return { allow: true };
      },
    }, {}, { resolveOnServer: true });
    this.c.upstream.subsys('sftp', (err, up) => {
      if (err) return this.relay(op, a, { subsystem: 'sftp' }, err, up);
      this.up = up;
      this.ch.pipe(filter.clientToServer).pipe(up);
      up.pipe(filter.serverToClient).pipe(this.ch, { end: false });
      up.stderr.on('data', (d: Buffer) => this.ch.stderr.write(d));
      filter.clientToServer.on('error', (e: Error) => {
        this.c.logger.warn({ err: e, session: this.c.id }, 'sftp protocol error; closing the channel');
        this.ch.close();
        up.close();
      });
      up.on('exit', (code: number | null, signal?: string) => (this.exit = code === null ? { signal } : { code }));
      up.on('close', () => {
        this.toClient = filter.bytesToClient;
        this.fromClient = filter.bytesFromClient;
        this.finish(op, a, { subsystem: 'sftp', home: filter.home });
      });
    });
  }

  private relay(op: Operation, a: Authorized, classification: Record<string, unknown>, err: Error | undefined, up: ClientChannel): void {
    if (err) {
      this.say(`airlock: the target refused to open the channel: ${err.message}`);
      this.c.record({ at: new Date(this.started), text: op.text, kind: op.kind, classification: { target: this.c.target.name, ...classification }, decision: a.decision.action, rule: a.decision.rule, error: `upstream channel failed: ${err.message}`, approval: a.approval });
      void this.cast?.close();
      return this.close(EXIT_GATEWAY_ERROR);
    }
    this.up = up;
    if (this.ch.destroyed) {
      up.close();
    }
    // Output masking only when the deciding rule asks for it (see output-masker.ts); the
    // recording and the byte counts see what the client sees.
    const detectors = a.decision.action === 'deny' ? [] : mergeDetectors(outputDetectors(a.decision), this.c.g.opaqueMasks(op));
    let stdout: NodeJS.ReadableStream = up;
    let stderr: NodeJS.ReadableStream = up.stderr;
    if (detectors.length) {
      this.maskers = [new OutputMasker(detectors, this.c.g.hasher), new OutputMasker(detectors, this.c.g.hasher)];
      stdout = up.pipe(this.maskers[0]);
      stderr = up.stderr.pipe(this.maskers[1]);
    }
    stdout.on('data', (d: Buffer) => {
      this.toClient += d.length;
      this.cast?.output(d);
    });
    stderr.on('data', (d: Buffer) => {
      this.toClient += d.length;
      this.cast?.output(d);
    });
    this.ch.on('data', (d: Buffer) => {
      this.fromClient += d.length;
      if (this.recordInput) this.cast?.input(d);
    });
    this.ch.pipe(up);
    stdout.pipe(this.ch, { end: false });
    stderr.pipe(this.ch.stderr, { end: false });
    this.outputDone = Promise.all(
      [stdout, stderr].map((s) => new Promise<void>((r) => (s as NodeJS.ReadableStream & { readableEnded?: boolean }).readableEnded ? r() : s.once('end', () => r()))),
    ).then(() => undefined);
    up.on('exit', (code: number | null, signal?: string, dump?: boolean, desc?: string) => {
      this.exit = code === null ? { signal, coreDumped: !!dump, message: desc ?? '' } : { code };
    });
    // Masked output may still be in the maskers when the upstream channel closes.
    up.on('close', () => {
      const wait = this.maskers ? Promise.race([this.outputDone, new Promise((r) => setTimeout(r, 2000))]) : Promise.resolve();
      void wait.then(() => this.finish(op, a, classification));
    });
  }

  private maskers: [OutputMasker, OutputMasker] | undefined;
  private outputDone: Promise<void> = Promise.resolve();

  private finish(op: Operation, a: Authorized, classification: Record<string, unknown>): void {
    const ex = this.exit;
    const recording = this.cast?.path;
    void this.cast?.close();
    this.c.bytesToClient += this.toClient;
    this.c.bytesFromClient += this.fromClient;
    this.c.record({
      at: new Date(this.started),
      text: op.text,
      kind: op.kind,
      classification: {
        target: this.c.target.name,
        ...classification,
        ...(ex.code !== undefined ? { exitStatus: ex.code } : {}),
        ...(ex.signal ? { exitSignal: ex.signal } : {}),
        bytesToClient: this.toClient,
        bytesFromClient: this.fromClient,
        ...(recording ? { recording, recordedInput: this.recordInput } : {}),
      },
      ...(this.maskers ? { maskedColumns: [...new Set(this.maskers.flatMap((m) => [...m.masked.keys()]))].map((d) => `detector:${d}@output`) } : {}),
      decision: a.decision.action,
      rule: a.decision.rule,
      bytes: this.toClient,
      durationMs: Date.now() - this.started,
      approval: a.approval,
    });
    this.c.enforce.reportResult(a.approval, {
      summary: `${op.text}: ${ex.signal ? `killed by ${ex.signal}` : `exit status ${ex.code ?? 'unknown'}`}, ${this.toClient} bytes out, ${Date.now() - this.started} ms`,
      tag: ex.signal ? `signal ${ex.signal}` : `exit ${ex.code ?? 'unknown'}`,
    });
    if (this.ch.destroyed) return;
    void drained(this.ch).then(() => {
      try {
        if (ex.signal) this.ch.exit(ex.signal.replace(/^SIG/, ''), ex.coreDumped ?? false, ex.message ?? '');
        else if (ex.code !== undefined) this.ch.exit(ex.code);
      } catch {
        // unknown signal name or channel closing: the client sees no status
      }
      this.ch.end();
    });
  }
}

// ---------------------------------------------------------------- the listener

interface GatewayContext {
  loaded: LoadedConfig;
  settings: SshSettings;
  tokens: ReturnType<typeof tokenSettings>;
  policy: PolicyDecider;
  elevations?: ElevationSource;
  store: Store;
  approver: Approver;
  logger: Logger;
  recordingsDir: string;
  upstreamTimeoutMs: number;
  metrics?: GatewayMetrics;
  tracer?: Tracer;
  /** For the `hash` strategy of output masking (config/keys.ts maskHashKey). */
  hasher: Hasher;
  bindingKey: string;
  /** Output masks of complex commands and shells (fail closed, see output-masker.ts). */
  opaqueMasks: (op: Operation) => DetectorMask[];
  audit(kind: string, subject: string, detail: Record<string, unknown>): void;
}

export async function startSshGateway(opts: SshGatewayOptions): Promise<SshGateway> {
  const logger = opts.logger ?? defaultLogger.child({ component: 'ssh' });
  const settings = sshSettings(opts.config);
  const g: GatewayContext = {
    loaded: opts.config,
    settings,
    tokens: tokenSettings(opts.config),
    policy: opts.policy,
    ...(opts.elevations ? { elevations: opts.elevations } : {}),
    store: opts.store,
    approver: opts.approver,
    logger,
    recordingsDir: opts.recordingsDir ?? settings.recordingsDir,
    upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 10_000,
    metrics: opts.metrics,
    ...(opts.tracer ? { tracer: opts.tracer } : {}),
    opaqueMasks: opaqueOutputMasks(opts.config.config.policy.rules),
    // Without masking.hashKey, hashes are stable only for this process's lifetime.
    // The same key as every other protocol's `hash` masking, so a value hashes identically everywhere.
    hasher: new Hasher(maskHashKey(opts.config)),
    bindingKey: opts.bindingKey,
    audit(kind, subject, detail) {
      try {
        opts.store.recordAudit({ at: new Date(), kind, subject, detail });
      } catch (err) {
        logger.error({ err }, 'recording an audit event failed');
      }
    },
  };

  const live = new Set<SshConnection>();
  const sockets = new Set<Socket>();
  const loginTimers = new Map<string, NodeJS.Timeout>();

  // Keepalives find clients that vanished without a FIN, so their holds are cancelled.
  const ssh = new Server({ hostKeys: [settings.hostKey], ident: 'Airlock', keepaliveInterval: 30_000, keepaliveCountMax: 4 }, (conn, info) => {
    const clientAddress = `${info.ip}:${info.port}`;
    const c = new SshConnection(g, conn, clientAddress);
    live.add(c);
    conn.on('error', (err: Error) => logger.debug({ err, clientAddress }, 'ssh client error'));
    conn.on('authentication', (ctx) => {
      try {
        c.onAuth(ctx);
      } catch (err) {
        logger.error({ err }, 'ssh authentication handler failed');
        ctx.reject([]);
      }
    });
    conn.on('ready', () => {
      const t = loginTimers.get(clientAddress);
      if (t) clearTimeout(t);
      loginTimers.delete(clientAddress);
      c.onReady();
    });
    conn.on('close', () => {
      live.delete(c);
      c.end('client disconnected');
    });
  });
  // ssh2 has no login timeout: our own listener injects sockets so each one gets a deadline.
  const net = createServer((socket) => {
    const key = `${socket.remoteAddress}:${socket.remotePort}`;
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', (err) => logger.debug({ err, clientAddress: key }, 'ssh socket error'));
    loginTimers.set(
      key,
      setTimeout(() => {
        logger.info({ clientAddress: key }, 'ssh client did not log in in time; disconnecting');
        socket.destroy();
      }, settings.loginTimeoutMs),
    );
    socket.on('close', () => {
      sockets.delete(socket);
      const t = loginTimers.get(key);
      if (t) clearTimeout(t);
      loginTimers.delete(key);
    });
    ssh.injectSocket(socket);
  });
  net.on('error', (err) => logger.error({ err }, 'ssh listener error'));
  const host = opts.host ?? settings.config.listen.host;
  const port = opts.port ?? settings.config.listen.port;
  await new Promise<void>((resolve, reject) => {
    net.once('error', reject);
    net.listen(port, host, () => {
      net.off('error', reject);
      resolve();
    });
  });
  const addr = net.address() as { address: string; port: number };
  logger.info({ host: addr.address, port: addr.port, hostKeyFingerprint: settings.hostKeyFingerprint, targets: [...settings.targets.keys()] }, `ssh gateway listening; host key ${settings.hostKeyFingerprint}`);

  return {
    host: addr.address,
    port: addr.port,
    hostKeyFingerprint: settings.hostKeyFingerprint,
    hostPublicKey: settings.hostPublicKey,
    recordingsDir: g.recordingsDir,
    connections: () => live.size,
    async close() {
      const closed = new Promise<void>((r) => net.close(() => r()));
      for (const c of [...live]) c.end('gateway shutting down');
      for (const s of sockets) s.destroy();
      for (const t of loginTimers.values()) clearTimeout(t);
      await closed;
    },
  };
}
