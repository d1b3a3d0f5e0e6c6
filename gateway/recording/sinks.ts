// Streaming the audit journal to SIEMs (config `audit.sinks`): stdout, a file with rotation, an
// HTTP webhook with retries, syslog (RFC 5424 over UDP). Each sink follows the journal on its own
// read-only connection and keeps its position (the last journal seq delivered) in a small file
// written after each delivered batch, so a restart resumes where it stopped: at least once.
// A failing sink only falls behind: it never blocks or slows traffic (it is not on the write
// path), it retries with backoff, and its lag is visible in `airlock audit status`.
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { dirname, isAbsolute, join } from 'node:path';
import { log } from '../log.ts';
import { formatRecord, JournalReader, type ExportFormat } from './export.ts';

export type SinkConfig =
  | { type: 'stdout'; name?: string; format?: ExportFormat }
  | { type: 'file'; name?: string; format?: ExportFormat; path: string; maxBytes?: number; keep?: number }
  | { type: 'webhook'; name?: string; format?: ExportFormat; url: string; headers?: Record<string, string>; timeoutMs?: number }
  | { type: 'syslog'; name?: string; format?: ExportFormat; host?: string; port?: number };

export interface SinkStatus {
  name: string;
  type: string;
  /** Last journal seq delivered. */
  position: number;
  head: number;
  /** Entries not delivered yet. */
  lag: number;
  /** Age in seconds of the oldest entry not delivered yet (0 without lag). Live sinks only. */
  lagSeconds?: number;
  /** Failed delivery attempts since the gateway started. Live sinks only. */
  failures?: number;
  lastError?: string;
  lastDeliveredAt?: string;
}

const BATCH = 500;

export function sinkName(c: SinkConfig, i: number): string {
  return c.name ?? `${c.type}-${i + 1}`;
}

/** Where sink positions live: `<store file>.sinks/<name>.pos`. */
export function positionFile(storePath: string, name: string): string {
  return join(`${storePath}.sinks`, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.pos`);
}

export function readPosition(file: string): number {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n >= 0 ? n : 0;
  } catch {
    return 0;
  }
}

function writePosition(file: string, seq: number): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${seq}\n`);
  renameSync(tmp, file);
}

type Deliver = (lines: string[]) => Promise<void>;

function deliverer(c: SinkConfig, baseDir: string): Deliver {
  switch (c.type) {
    case 'stdout':
      return async (lines) => {
        process.stdout.write(lines.join('\n') + '\n');
      };
    case 'file': {
      const path = isAbsolute(c.path) ? c.path : join(baseDir, c.path);
      const maxBytes = c.maxBytes ?? 64 * 1024 * 1024;
      const keep = c.keep ?? 5;
      return async (lines) => {
        mkdirSync(dirname(path), { recursive: true });
        if (existsSync(path) && statSync(path).size >= maxBytes) {
          for (let i = keep - 1; i >= 1; i--) if (existsSync(`${path}.${i}`)) renameSync(`${path}.${i}`, `${path}.${i + 1}`);
          renameSync(path, `${path}.1`);
        }
        appendFileSync(path, lines.join('\n') + '\n', { mode: 0o600 });
      };
    }
    case 'webhook':
      return async (lines) => {
        const res = await fetch(c.url, {
          method: 'POST',
          headers: { 'content-type': 'application/x-ndjson', ...(c.headers ?? {}) },
          body: lines.join('\n') + '\n',
          signal: AbortSignal.timeout(c.timeoutMs ?? 10_000),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (!res.ok) throw new Error(`webhook answered HTTP ${res.status}`);
      };
    case 'syslog': {
      const host = c.host ?? '127.0.0.1';
      const port = c.port ?? 514;
      return (lines) =>
        new Promise<void>((ok, fail) => {
          const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
          let left = lines.length;
          const done = (err?: Error | null) => {
            if (err) {
              sock.close();
              return fail(err);
            }
            if (--left === 0) {
              sock.close();
              ok();
            }
          };
          // PRI 110: facility 13 (log audit) * 8 + severity 6 (informational).
          for (const l of lines) sock.send(Buffer.from(`<110>1 ${new Date().toISOString()} - airlock - audit - ${l}`), port, host, done);
        });
    }
  }
}

/** One sink following the journal. */
export class SinkStreamer {
  readonly name: string;
  private readonly deliver: Deliver;
  private readonly posFile: string;
  private position: number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private failuresTotal = 0;
  private lastError: string | undefined;
  private lastDeliveredAt: Date | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly reader: JournalReader,
    private readonly config: SinkConfig,
    index: number,
    storePath: string,
    baseDir: string,
    private readonly pollMs = 1000,
  ) {
    this.name = sinkName(config, index);
    this.deliver = deliverer(config, baseDir);
    this.posFile = positionFile(storePath, this.name);
    this.position = readPosition(this.posFile);
  }

  start(): void {
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().then((delay) => this.schedule(delay));
    }, ms);
    this.timer.unref();
  }

  /** Delivers what is pending; returns the delay before the next attempt. */
  async tick(): Promise<number> {
    try {
      for (;;) {
        const batch = this.reader.read(this.position, BATCH);
        if (batch.length === 0) break;
        const format = this.config.format ?? 'ocsf';
        await this.deliver(batch.map((r) => formatRecord(r, format, this.reader)));
        this.position = batch[batch.length - 1].seq;
        writePosition(this.posFile, this.position);
        this.lastDeliveredAt = new Date();
        this.failures = 0;
        this.lastError = undefined;
        if (this.stopped) break;
      }
      return this.pollMs;
    } catch (e) {
      this.failures++;
      this.failuresTotal++;
      this.lastError = e instanceof Error ? e.message : String(e);
      log.warn({ sink: this.name, err: this.lastError, failures: this.failures }, 'audit sink delivery failed; retrying');
      return Math.min(this.pollMs * 2 ** Math.min(this.failures, 6), 60_000);
    }
  }

  status(): SinkStatus {
    const head = this.reader.headSeq();
    const lag = Math.max(0, head - this.position);
    const oldest = lag > 0 ? this.reader.firstAtAfter(this.position) : undefined;
    return {
      name: this.name,
      type: this.config.type,
      position: this.position,
      head,
      lag,
      lagSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000),
      failures: this.failuresTotal,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.lastDeliveredAt ? { lastDeliveredAt: this.lastDeliveredAt.toISOString() } : {}),
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running.catch(() => undefined);
  }
}

export interface AuditSinks {
  sinks: SinkStreamer[];
  status(): SinkStatus[];
  close(): Promise<void>;
}

/** Starts every configured sink on the store file at `storePath`. */
export function startAuditSinks(storePath: string, configs: SinkConfig[], baseDir: string, pollMs = 1000): AuditSinks {
  const reader = new JournalReader(storePath);
  const sinks = configs.map((c, i) => new SinkStreamer(reader, c, i, storePath, baseDir, pollMs));
  for (const s of sinks) s.start();
  return {
    sinks,
    status: () => sinks.map((s) => s.status()),
    async close() {
      await Promise.all(sinks.map((s) => s.stop()));
      reader.close();
    },
  };
}

/** Sink positions and lag read offline (for `airlock audit status`). */
export function offlineSinkStatus(storePath: string, configs: SinkConfig[]): SinkStatus[] {
  const reader = new JournalReader(storePath);
  try {
    const head = reader.headSeq();
    return configs.map((c, i) => {
      const name = sinkName(c, i);
      const position = readPosition(positionFile(storePath, name));
      return { name, type: c.type, position, head, lag: Math.max(0, head - position) };
    });
  } finally {
    reader.close();
  }
}
