// A local stand-in for Slack: the Web API endpoints Airlock calls (as @slack/web-api sends them:
// form-encoded or JSON, bot token in `Authorization: Bearer`), the file upload URL it hands out,
// and a client that POSTs signed interaction payloads to a Bolt receiver the way Slack does.
// Everything is recorded so tests can assert on what Slack would have shown.
import { createHmac } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startLocalServer, type LocalServer } from './local-server.ts';

export interface FakeSlackCall {
  method: string;
  params: Record<string, unknown>;
  /** The response sent, or undefined when the call was failed or left hanging on purpose. */
  response?: Record<string, unknown>;
}

export interface FakeMessage {
  channel: string;
  ts: string;
  thread_ts?: string;
  text: string;
  blocks: SlackBlock[];
  reply_broadcast: boolean;
  /** How many times chat.update rewrote it. */
  edits: number;
}

export interface FakeEphemeral {
  channel: string;
  user: string;
  text: string;
  blocks: SlackBlock[];
}

export interface FakeFile {
  id: string;
  filename: string;
  length: number;
  content?: Buffer;
  channel_id?: string;
  thread_ts?: string;
  title?: string;
  initial_comment?: string;
  completed: boolean;
}

/** A Block Kit block as posted; loose on purpose (tests read whatever fields they check). */
export type SlackBlock = Record<string, unknown> & { type: string };

export type FakeFault =
  | { kind: 'http'; status: number }
  | { kind: 'rate-limit'; retryAfterSeconds: number }
  | { kind: 'hang' }
  | { kind: 'error'; error: string };

interface Channel {
  id: string;
  name: string;
  botIsMember: boolean;
}

interface User {
  id: string;
  name: string;
  email?: string;
  emailConfirmed: boolean;
  /** A single-channel guest (users.info is_ultra_restricted). */
  guest: boolean;
}

interface PendingFault {
  fault: FakeFault;
  remaining: number;
  method?: string;
}

export class FakeSlack {
  readonly calls: FakeSlackCall[] = [];
  readonly messages: FakeMessage[] = [];
  readonly ephemerals: FakeEphemeral[] = [];
  readonly views: Array<{ trigger_id: string; view: Record<string, unknown> }> = [];
  readonly files = new Map<string, FakeFile>();
  private readonly channels = new Map<string, Channel>();
  private readonly users = new Map<string, User>();
  private readonly faults: PendingFault[] = [];
  private readonly events = new EventEmitter();
  private seq = 0;

  private constructor(
    private readonly server: LocalServer,
    readonly port: number,
    readonly token: string,
  ) {}

  /** Base URL for WebClient's `slackApiUrl`. */
  get apiUrl(): string {
    return `http://127.0.0.1:${this.port}/api/`;
  }

  static async start(opts: { token?: string } = {}): Promise<FakeSlack> {
    let fake: FakeSlack | undefined;
    const server = await startLocalServer((req, res) => fake!.handle(req, res));
    fake = new FakeSlack(server, server.port, opts.token ?? 'xoxb-fake-bot-token');
    return fake;
  }

  stop(): Promise<void> {
    return this.server.stop();
  }

  /** Registers a channel the bot can see; returns its id. `#` in the name is optional. */
  addChannel(name: string, opts: { id?: string; botIsMember?: boolean } = {}): string {
    const id = opts.id ?? `C${String(this.channels.size + 1).padStart(8, '0')}`;
    this.channels.set(id, { id, name: name.replace(/^#/, ''), botIsMember: opts.botIsMember ?? true });
    return id;
  }

  /** `emailConfirmed` (users.info `is_email_confirmed`) defaults to true, as for a confirmed account. */
  addUser(id: string, opts: { name?: string; email?: string; emailConfirmed?: boolean; guest?: boolean } = {}): void {
    this.users.set(id, { id, name: opts.name ?? id.toLowerCase(), email: opts.email, emailConfirmed: opts.emailConfirmed ?? true, guest: opts.guest ?? false });
  }

  /** The next `count` calls (to `method`, or any method) fail the given way. */
  failNext(count: number, fault: FakeFault, method?: string): void {
    this.faults.push({ fault, remaining: count, method });
  }

  /** Drops every pending fault (an outage scenario is over). */
  clearFaults(): void {
    this.faults.length = 0;
  }

  callsTo(method: string): FakeSlackCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  channelId(name: string): string | undefined {
    return this.resolveChannel(name)?.id;
  }

  /** Top-level messages and thread replies in a channel (by id or name), oldest first. */
  messagesIn(channel: string): FakeMessage[] {
    const id = this.resolveChannel(channel)?.id ?? channel;
    return this.messages.filter((m) => m.channel === id);
  }

  replies(channel: string, threadTs: string): FakeMessage[] {
    return this.messagesIn(channel).filter((m) => m.thread_ts === threadTs);
  }

  /** Resolves once a recorded call satisfies `pred` (checks past calls first). */
  waitForCall(pred: (c: FakeSlackCall) => boolean, timeoutMs = 5000): Promise<FakeSlackCall> {
    const found = this.calls.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.off('call', onCall);
        reject(new Error(`fake Slack: no matching call within ${timeoutMs}ms; calls so far: ${this.calls.map((c) => c.method).join(', ')}`));
      }, timeoutMs);
      const onCall = (c: FakeSlackCall): void => {
        if (!pred(c)) return;
        clearTimeout(timer);
        this.events.off('call', onCall);
        resolve(c);
      };
      this.events.on('call', onCall);
    });
  }

  private resolveChannel(ref: string): Channel | undefined {
    const byId = this.channels.get(ref);
    if (byId) return byId;
    const name = ref.replace(/^#/, '');
    for (const c of this.channels.values()) if (c.name === name) return c;
    return undefined;
  }

  private nextTs(): string {
    this.seq += 1;
    return `${Math.floor(Date.now() / 1000)}.${String(this.seq).padStart(6, '0')}`;
  }

  private takeFault(method: string): FakeFault | undefined {
    const f = this.faults.find((x) => x.remaining > 0 && (x.method === undefined || x.method === method));
    if (!f) return undefined;
    f.remaining -= 1;
    return f.fault;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${this.port}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);

    if (req.method === 'POST' && url.pathname.startsWith('/upload/')) {
      await this.handleUpload(url.pathname.slice('/upload/'.length), req, raw, res);
      return;
    }
    if (req.method !== 'POST' || !url.pathname.startsWith('/api/')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    const method = url.pathname.slice('/api/'.length);
    const params = await parseBody(req, raw);
    const call: FakeSlackCall = { method, params };
    this.calls.push(call);

    const fault = this.takeFault(method);
    if (fault) {
      this.events.emit('call', call);
      if (fault.kind === 'hang') return; // never answer; stop() destroys the socket
      if (fault.kind === 'http') {
        res.writeHead(fault.status, { 'content-type': 'text/plain' }).end(`fake Slack: HTTP ${fault.status}`);
        return;
      }
      if (fault.kind === 'rate-limit') {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(fault.retryAfterSeconds) });
        res.end(JSON.stringify({ ok: false, error: 'ratelimited' }));
        return;
      }
      this.respond(res, call, { ok: false, error: fault.error });
      return;
    }

    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : typeof params.token === 'string' ? params.token : undefined;
    if (token === undefined) return this.respond(res, call, { ok: false, error: 'not_authed' });
    if (token !== this.token) return this.respond(res, call, { ok: false, error: 'invalid_auth' });

    this.respond(res, call, this.dispatch(method, params));
  }

  private respond(res: ServerResponse, call: FakeSlackCall, body: Record<string, unknown>): void {
    call.response = body;
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
    this.events.emit('call', call);
  }

  private dispatch(method: string, p: Record<string, unknown>): Record<string, unknown> {
    switch (method) {
      case 'auth.test':
        return { ok: true, url: 'https://fake.slack.com/', team: 'Fake', user: 'airlock', team_id: 'T00000001', user_id: 'U0BOT', bot_id: 'B0BOT' };
      case 'chat.postMessage': {
        const ch = this.writableChannel(p.channel);
        if ('error' in ch) return ch;
        const text = str(p.text);
        const blocks = parseJson<SlackBlock[]>(p.blocks) ?? [];
        if (!text && blocks.length === 0) return { ok: false, error: 'no_text' };
        const threadTs = str(p.thread_ts) || undefined;
        if (threadTs && !this.messages.some((m) => m.channel === ch.id && m.ts === threadTs)) return { ok: false, error: 'thread_not_found' };
        const msg: FakeMessage = { channel: ch.id, ts: this.nextTs(), thread_ts: threadTs, text, blocks, reply_broadcast: p.reply_broadcast === true || p.reply_broadcast === 'true', edits: 0 };
        this.messages.push(msg);
        return { ok: true, channel: ch.id, ts: msg.ts, message: { type: 'message', text, blocks, ts: msg.ts, thread_ts: threadTs } };
      }
      case 'chat.update': {
        const ch = this.resolveChannel(str(p.channel));
        if (!ch || ch.id !== p.channel) return { ok: false, error: 'channel_not_found' };
        const msg = this.messages.find((m) => m.channel === ch.id && m.ts === p.ts);
        if (!msg) return { ok: false, error: 'message_not_found' };
        if (p.text !== undefined) msg.text = str(p.text);
        if (p.blocks !== undefined) msg.blocks = parseJson<SlackBlock[]>(p.blocks) ?? [];
        msg.edits += 1;
        return { ok: true, channel: ch.id, ts: msg.ts, text: msg.text };
      }
      case 'chat.postEphemeral': {
        const ch = this.writableChannel(p.channel);
        if ('error' in ch) return ch;
        if (!this.users.has(str(p.user))) return { ok: false, error: 'user_not_found' };
        this.ephemerals.push({ channel: ch.id, user: str(p.user), text: str(p.text), blocks: parseJson<SlackBlock[]>(p.blocks) ?? [] });
        return { ok: true, message_ts: this.nextTs() };
      }
      case 'chat.getPermalink': {
        const ch = this.resolveChannel(str(p.channel));
        const msg = ch && this.messages.find((m) => m.channel === ch.id && m.ts === p.message_ts);
        if (!ch || !msg) return { ok: false, error: 'message_not_found' };
        return { ok: true, channel: ch.id, permalink: `https://fake.slack.com/archives/${ch.id}/p${msg.ts.replace('.', '')}` };
      }
      case 'users.info': {
        const u = this.users.get(str(p.user));
        if (!u) return { ok: false, error: 'user_not_found' };
        return { ok: true, user: { id: u.id, name: u.name, deleted: false, is_bot: false, is_email_confirmed: u.emailConfirmed, is_restricted: u.guest, is_ultra_restricted: u.guest, profile: { real_name: u.name, display_name: u.name, ...(u.email ? { email: u.email } : {}) } } };
      }
      case 'views.open': {
        const trigger = str(p.trigger_id);
        const view = parseJson<Record<string, unknown>>(p.view);
        if (!trigger) return { ok: false, error: 'invalid_arguments' };
        if (!view || view.type !== 'modal') return { ok: false, error: 'invalid_arguments' };
        this.views.push({ trigger_id: trigger, view });
        return { ok: true, view: { id: `V${String(this.views.length).padStart(8, '0')}`, ...view } };
      }
      case 'files.getUploadURLExternal': {
        const filename = str(p.filename);
        const length = Number(p.length);
        if (!filename || !Number.isInteger(length) || length < 0) return { ok: false, error: 'invalid_arguments' };
        const id = `F${String(this.files.size + 1).padStart(8, '0')}`;
        this.files.set(id, { id, filename, length, completed: false });
        return { ok: true, upload_url: `http://127.0.0.1:${this.port}/upload/${id}`, file_id: id };
      }
      case 'files.completeUploadExternal': {
        const list = parseJson<Array<{ id: string; title?: string }>>(p.files);
        if (!list || list.length === 0) return { ok: false, error: 'invalid_arguments' };
        const channelId = str(p.channel_id) || undefined;
        if (channelId) {
          const ch = this.writableChannel(channelId);
          if ('error' in ch) return ch;
        }
        const done: FakeFile[] = [];
        for (const f of list) {
          const file = this.files.get(f.id);
          if (!file || file.content === undefined) return { ok: false, error: 'file_not_found' };
          Object.assign(file, { completed: true, title: f.title, channel_id: channelId, thread_ts: str(p.thread_ts) || undefined, initial_comment: str(p.initial_comment) || undefined });
          done.push(file);
        }
        return { ok: true, files: done.map((f) => ({ id: f.id, name: f.filename, title: f.title })) };
      }
      default:
        return { ok: false, error: 'unknown_method' };
    }
  }

  private writableChannel(ref: unknown): Channel | { ok: false; error: string } {
    const ch = this.resolveChannel(str(ref));
    if (!ch) return { ok: false, error: 'channel_not_found' };
    if (!ch.botIsMember) return { ok: false, error: 'not_in_channel' };
    return ch;
  }

  private async handleUpload(fileId: string, req: IncomingMessage, raw: Buffer, res: ServerResponse): Promise<void> {
    const file = this.files.get(fileId);
    const call: FakeSlackCall = { method: 'upload', params: { file_id: fileId, bytes: raw.length } };
    this.calls.push(call);
    const fault = this.takeFault('upload');
    if (fault?.kind === 'hang') return;
    if (fault) {
      res.writeHead(fault.kind === 'http' ? fault.status : 500).end();
      this.events.emit('call', call);
      return;
    }
    if (!file) {
      res.writeHead(404).end();
      this.events.emit('call', call);
      return;
    }
    // Slack accepts raw bytes or multipart; WebClient sends multipart with the file as a Blob.
    let content = raw;
    const type = req.headers['content-type'] ?? '';
    if (type.startsWith('multipart/form-data')) {
      const form = await new Request('http://upload', { method: 'POST', headers: { 'content-type': type }, body: new Uint8Array(raw) }).formData();
      const blob = [...form.values()].find((v): v is File => typeof v !== 'string');
      if (!blob) {
        res.writeHead(400).end('no file part');
        return;
      }
      content = Buffer.from(await blob.arrayBuffer());
    }
    file.content = content;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`OK - ${content.length}`);
    this.events.emit('call', call);
  }
}

async function parseBody(req: IncomingMessage, raw: Buffer): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? '';
  if (type.startsWith('application/json')) {
    const v: unknown = raw.length ? JSON.parse(raw.toString('utf8')) : {};
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  }
  if (type.startsWith('multipart/form-data')) {
    const form = await new Request('http://api', { method: 'POST', headers: { 'content-type': type }, body: new Uint8Array(raw) }).formData();
    const out: Record<string, unknown> = {};
    for (const [k, v] of form.entries()) out[k] = typeof v === 'string' ? v : Buffer.from(await v.arrayBuffer());
    return out;
  }
  return Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
}

/** WebClient JSON-encodes nested values inside form bodies; JSON bodies carry them as-is. */
function parseJson<T>(v: unknown): T | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') return v as T;
  try {
    return JSON.parse(v) as T;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Interactions: what Slack POSTs to the app's request URL when someone clicks or submits.

export interface SignOptions {
  /** Unix seconds put in X-Slack-Request-Timestamp (default now). */
  timestamp?: number;
  /** Override the computed signature (e.g. a forged one). */
  signature?: string;
  /** Send no signature headers at all. */
  unsigned?: boolean;
  /** Sign with this secret instead of the right one. */
  secret?: string;
}

export function slackSignature(secret: string, timestamp: number, body: string): string {
  return `v0=${createHmac('sha256', secret).update(`v0:${timestamp}:${body}`).digest('hex')}`;
}

/** POSTs `payload=<json>` form-encoded and signed like Slack does; returns the HTTP status and body. */
export async function postInteraction(
  url: string,
  signingSecret: string,
  payload: object,
  opts: SignOptions = {},
): Promise<{ status: number; body: string }> {
  const body = `payload=${encodeURIComponent(JSON.stringify(payload))}`;
  const ts = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (!opts.unsigned) {
    headers['x-slack-request-timestamp'] = String(ts);
    headers['x-slack-signature'] = opts.signature ?? slackSignature(opts.secret ?? signingSecret, ts, body);
  }
  const res = await fetch(url, { method: 'POST', headers, body });
  return { status: res.status, body: await res.text() };
}

/** POSTs a slash command (form fields, as Slack sends `/airlock pending`), signed like Slack does. */
export async function postSlashCommand(
  url: string,
  signingSecret: string,
  a: { command: string; text: string; userId: string; channelId: string },
  opts: SignOptions = {},
): Promise<{ status: number; body: string }> {
  const body = new URLSearchParams({
    token: 'legacy-verification-token',
    team_id: 'T00000001',
    team_domain: 'fake',
    channel_id: a.channelId,
    channel_name: 'approvals',
    user_id: a.userId,
    user_name: a.userId.toLowerCase(),
    command: a.command,
    text: a.text,
    api_app_id: 'A00000001',
    response_url: 'https://hooks.slack.invalid/commands/T00000001/1/x',
    trigger_id: `${++triggerSeq}.1.fake-trigger`,
  }).toString();
  const ts = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (!opts.unsigned) {
    headers['x-slack-request-timestamp'] = String(ts);
    headers['x-slack-signature'] = opts.signature ?? slackSignature(opts.secret ?? signingSecret, ts, body);
  }
  const res = await fetch(url, { method: 'POST', headers, body });
  return { status: res.status, body: await res.text() };
}

let triggerSeq = 0;

/** A `block_actions` payload for a button click on a message. */
export function blockActionPayload(a: {
  userId: string;
  userName?: string;
  channelId: string;
  messageTs: string;
  actionId: string;
  value: string;
  blockId?: string;
}): { payload: Record<string, unknown>; triggerId: string } {
  triggerSeq += 1;
  const triggerId = `${triggerSeq}.1.fake-trigger`;
  const now = (Date.now() / 1000).toFixed(6);
  return {
    triggerId,
    payload: {
      type: 'block_actions',
      user: { id: a.userId, username: a.userName ?? a.userId.toLowerCase(), name: a.userName ?? a.userId.toLowerCase(), team_id: 'T00000001' },
      api_app_id: 'A00000001',
      token: 'legacy-verification-token',
      container: { type: 'message', message_ts: a.messageTs, channel_id: a.channelId, is_ephemeral: false },
      trigger_id: triggerId,
      team: { id: 'T00000001', domain: 'fake' },
      enterprise: null,
      is_enterprise_install: false,
      channel: { id: a.channelId, name: 'approvals' },
      message: { type: 'message', ts: a.messageTs, text: '' },
      state: { values: {} },
      response_url: 'https://hooks.slack.invalid/actions/T00000001/1/x',
      actions: [{ action_id: a.actionId, block_id: a.blockId ?? 'airlock_decision', text: { type: 'plain_text', text: a.actionId }, value: a.value, type: 'button', action_ts: now }],
    },
  };
}

/** A `view_submission` payload for a modal with plain text inputs. */
export function viewSubmissionPayload(a: {
  userId: string;
  callbackId: string;
  privateMetadata: string;
  /** block_id -> action_id -> text typed by the user. */
  values: Record<string, Record<string, string>>;
}): Record<string, unknown> {
  const values: Record<string, Record<string, { type: string; value: string }>> = {};
  for (const [block, actions] of Object.entries(a.values)) {
    values[block] = {};
    for (const [action, value] of Object.entries(actions)) values[block][action] = { type: 'plain_text_input', value };
  }
  return {
    type: 'view_submission',
    team: { id: 'T00000001', domain: 'fake' },
    user: { id: a.userId, username: a.userId.toLowerCase(), name: a.userId.toLowerCase(), team_id: 'T00000001' },
    api_app_id: 'A00000001',
    token: 'legacy-verification-token',
    trigger_id: `${++triggerSeq}.1.fake-trigger`,
    view: {
      id: 'V00000001',
      team_id: 'T00000001',
      type: 'modal',
      callback_id: a.callbackId,
      private_metadata: a.privateMetadata,
      state: { values },
      hash: 'fake',
      title: { type: 'plain_text', text: 'Reject request' },
      blocks: [],
    },
    response_urls: [],
    is_enterprise_install: false,
    enterprise: null,
  };
}
