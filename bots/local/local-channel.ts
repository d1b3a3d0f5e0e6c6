// The offline approval channel: requests and their thread live in two tables of Airlock's SQLite
// file, so `airlock approvals list` (another process) can show them. Like Slack, it only shows;
// decisions go back to the workflow as validated Updates (workflows/decide.ts).
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { ApprovalChannel, ApprovalView, EscalationNotice, MessageRef } from '../channel.ts';
import { previewTable, previewTitle } from '../preview-text.ts';

export interface LocalRequest {
  view: ApprovalView;
  postedAt: Date;
  updatedAt: Date;
}

export interface LocalThreadMessage {
  at: Date;
  /** posted, updated, escalated, reply, log */
  kind: string;
  text: string;
  filename?: string;
  content?: string;
}

// Own tables (not the Store's migrations): the store's schema stays the store's business.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS local_approvals (
    request_id TEXT PRIMARY KEY,
    post_id    INTEGER NOT NULL,   -- bumps on every new post of the same request id (a new run)
    status     TEXT NOT NULL,
    view       TEXT NOT NULL,      -- JSON ApprovalView
    posted_at  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS local_approvals_status ON local_approvals (status, posted_at);
  CREATE TABLE IF NOT EXISTS local_approval_thread (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    post_id    INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    text       TEXT NOT NULL,
    filename   TEXT,
    content    TEXT
  );
  CREATE INDEX IF NOT EXISTS local_approval_thread_req ON local_approval_thread (request_id, id);
`;

interface Row {
  request_id: string;
  post_id: number;
  status: string;
  view: string;
  posted_at: number;
  updated_at: number;
}

export class LocalChannel implements ApprovalChannel {
  readonly kind = 'local';

  private constructor(private readonly db: Database.Database) {}

  /** Opens (creating if needed) the local channel's tables in this SQLite file, normally the store's. */
  static open(file: string): LocalChannel {
    const path = resolve(file);
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    try {
      db.pragma('busy_timeout = 2000');
      db.pragma('journal_mode = WAL');
      db.exec(SCHEMA);
    } catch (err) {
      db.close();
      throw new Error(`cannot open the local approval channel in ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    return new LocalChannel(db);
  }

  private ref(ref: MessageRef): { requestId: string; postId: number } {
    const requestId = ref.requestId;
    const postId = Number(ref.postId);
    if (typeof requestId !== 'string' || !Number.isInteger(postId)) {
      // Permanent: retrying a malformed reference can never succeed.
      throw Object.assign(new Error(`not a local channel message reference: ${JSON.stringify(ref)}`), { permanent: true });
    }
    return { requestId, postId };
  }

  private note(requestId: string, postId: number, kind: string, text: string, file?: { filename: string; content: string }): void {
    this.db
      .prepare('INSERT INTO local_approval_thread (request_id, post_id, at, kind, text, filename, content) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(requestId, postId, Date.now(), kind, text, file?.filename ?? null, file?.content ?? null);
  }

  async post(view: ApprovalView): Promise<MessageRef> {
    const now = Date.now();
    const postId = this.db.transaction(() => {
      const prev = this.db.prepare('SELECT post_id FROM local_approvals WHERE request_id = ?').get(view.requestId) as { post_id: number } | undefined;
      const id = (prev?.post_id ?? 0) + 1;
      this.db
        .prepare(
          `INSERT INTO local_approvals (request_id, post_id, status, view, posted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (request_id) DO UPDATE SET post_id = excluded.post_id, status = excluded.status, view = excluded.view,
             posted_at = excluded.posted_at, updated_at = excluded.updated_at`,
        )
        .run(view.requestId, id, view.status, JSON.stringify(view), now, now);
      const preview = view.preview ? `\n${previewTitle(view.preview)}${previewTable(view.preview) ? `\n${previewTable(view.preview)}` : ''}` : '';
      this.note(view.requestId, id, 'posted', `${view.identity} wants to run on ${view.connection}: ${view.text}${preview}`);
      return id;
    })();
    return { requestId: view.requestId, postId: String(postId) };
  }

  async update(ref: MessageRef, view: ApprovalView): Promise<void> {
    const { requestId, postId } = this.ref(ref);
    // Only the message of this post: a late update from an older run must not overwrite a newer request.
    this.db
      .prepare('UPDATE local_approvals SET status = ?, view = ?, updated_at = ? WHERE request_id = ? AND post_id = ?')
      .run(view.status, JSON.stringify(view), Date.now(), requestId, postId);
    const why = view.decisionReason ? `: ${view.decisionReason}` : '';
    const text =
      view.status === 'pending'
        ? `${view.decidedBy.length}/${view.quorum} approvals so far (${view.decidedBy.join(', ')})`
        : `${view.status}${view.decidedBy.length > 0 ? ` by ${view.decidedBy.join(', ')}` : ''}${why}`;
    this.note(requestId, postId, 'updated', text);
  }

  async escalate(ref: MessageRef, view: ApprovalView, step: EscalationNotice): Promise<void> {
    const { requestId, postId } = this.ref(ref);
    this.db
      .prepare('UPDATE local_approvals SET view = ?, updated_at = ? WHERE request_id = ? AND post_id = ?')
      .run(JSON.stringify({ ...view, escalated: true }), Date.now(), requestId, postId);
    const where = step.channel ? ` in ${step.channel}` : '';
    this.note(requestId, postId, 'escalated', `escalated to ${step.mention.map((m) => `@${m}`).join(', ')}${where}: still waiting, deadline ${view.deadline}`);
  }

  async reply(ref: MessageRef, text: string): Promise<void> {
    const { requestId, postId } = this.ref(ref);
    this.note(requestId, postId, 'reply', text);
  }

  async attachLog(ref: MessageRef, filename: string, content: string): Promise<void> {
    const { requestId, postId } = this.ref(ref);
    this.note(requestId, postId, 'log', `session log ${filename} (${Buffer.byteLength(content)} bytes)`, { filename, content });
  }

  /**
   * The full request id for an id or a unique prefix of one (as `list` prints them): the id
   * itself when it exists, else the only id starting with it; undefined when none; an error
   * listing candidates when the prefix is ambiguous.
   */
  resolveId(idOrPrefix: string): string | undefined {
    const want = idOrPrefix.trim();
    if (!want) return undefined;
    if (this.db.prepare('SELECT 1 FROM local_approvals WHERE request_id = ?').get(want)) return want;
    const like = `${want.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const rows = this.db.prepare("SELECT request_id FROM local_approvals WHERE request_id LIKE ? ESCAPE '\\' ORDER BY posted_at DESC LIMIT 6").all(like) as { request_id: string }[];
    if (rows.length === 1) return rows[0].request_id;
    if (rows.length > 1) throw new Error(`request id prefix ${want} is ambiguous: ${rows.map((r) => r.request_id).join(', ')}${rows.length > 5 ? ', ...' : ''}`);
    return undefined;
  }

  /** Requests, newest first; only pending ones unless `all`. */
  list(opts: { all?: boolean; limit?: number } = {}): LocalRequest[] {
    const rows = (
      opts.all
        ? this.db.prepare('SELECT * FROM local_approvals ORDER BY posted_at DESC LIMIT ?').all(opts.limit ?? 100)
        : this.db.prepare("SELECT * FROM local_approvals WHERE status = 'pending' ORDER BY posted_at DESC LIMIT ?").all(opts.limit ?? 100)
    ) as Row[];
    return rows.map(toRequest);
  }

  /** One request and its thread (current post only). */
  get(requestId: string): { request: LocalRequest; thread: LocalThreadMessage[] } | undefined {
    const row = this.db.prepare('SELECT * FROM local_approvals WHERE request_id = ?').get(requestId) as Row | undefined;
    if (!row) return undefined;
    const thread = (
      this.db
        .prepare('SELECT at, kind, text, filename, content FROM local_approval_thread WHERE request_id = ? AND post_id = ? ORDER BY id')
        .all(requestId, row.post_id) as { at: number; kind: string; text: string; filename: string | null; content: string | null }[]
    ).map((m) => ({ at: new Date(m.at), kind: m.kind, text: m.text, filename: m.filename ?? undefined, content: m.content ?? undefined }));
    return { request: toRequest(row), thread };
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function toRequest(r: Row): LocalRequest {
  return { view: JSON.parse(r.view) as ApprovalView, postedAt: new Date(r.posted_at), updatedAt: new Date(r.updated_at) };
}
