// Terminal recordings of kubectl exec/attach as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
// a JSON header line, then one `[seconds, code, data]` line per event: "o" stdout/stderr, "i"
// stdin, "r" resize ("COLSxROWS"). Replay with `asciinema play FILE` or any v2 player.
//
// Also decodes the Kubernetes remotecommand channel protocol: each websocket message starts with
// a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize; v5 adds 255 = close
// channel N). The base64 variants send the channel as an ASCII digit and base64 data.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

export interface AsciicastHeader {
  width: number;
  height: number;
  title?: string;
  command?: string;
  env?: Record<string, string>;
}

export class AsciicastWriter {
  readonly path: string;
  readonly #out: WriteStream;
  readonly #start = Date.now();
  readonly #header: AsciicastHeader;
  #headerWritten = false;
  readonly #decoders = new Map<string, StringDecoder>();
  #bytes = 0;
  #events = 0;
  #closed: Promise<void> | undefined;

  constructor(path: string, header: AsciicastHeader) {
    mkdirSync(dirname(path), { recursive: true });
    this.path = path;
    this.#out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
    this.#out.on('error', () => undefined);
    this.#header = { ...header };
  }

  get bytes(): number {
    return this.#bytes;
  }
  get events(): number {
    return this.#events;
  }

  #writeHeader(): void {
    if (this.#headerWritten) return;
    this.#headerWritten = true;
    const h: Record<string, unknown> = { version: 2, width: this.#header.width, height: this.#header.height, timestamp: Math.floor(this.#start / 1000) };
    if (this.#header.title) h.title = this.#header.title;
    if (this.#header.command) h.command = this.#header.command;
    h.env = this.#header.env ?? { TERM: 'xterm-256color' };
    this.#out.write(JSON.stringify(h) + '\n');
  }

  #event(code: 'o' | 'i' | 'r', data: string): void {
    if (this.#closed) return;
    this.#writeHeader();
    this.#events++;
    const t = Math.round(Date.now() - this.#start) / 1000;
    this.#out.write(JSON.stringify([t, code, data]) + '\n');
  }

  #text(stream: string, bytes: Uint8Array): string {
    let d = this.#decoders.get(stream);
    if (!d) this.#decoders.set(stream, (d = new StringDecoder('utf8')));
    return d.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  output(bytes: Uint8Array, stream = 'stdout'): void {
    this.#bytes += bytes.length;
    const s = this.#text(stream, bytes);
    if (s) this.#event('o', s);
  }

  input(bytes: Uint8Array): void {
    this.#bytes += bytes.length;
    const s = this.#text('stdin', bytes);
    if (s) this.#event('i', s);
  }

  resize(cols: number, rows: number): void {
    if (!this.#headerWritten) {
      // Before anything was shown the size belongs in the header.
      this.#header.width = cols;
      this.#header.height = rows;
      return;
    }
    this.#event('r', `${cols}x${rows}`);
  }

  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#writeHeader();
    this.#closed = new Promise((resolve) => this.#out.end(resolve));
    return this.#closed;
  }
}

export type ChannelMessage =
  | { channel: 0 | 1 | 2; data: Uint8Array }
  | { channel: 3; status: string }
  | { channel: 4; width: number; height: number }
  | { channel: 255; closes: number }
  | { channel: number; data: Uint8Array };

/** Decodes one remotecommand websocket message. `base64`: the base64.channel.k8s.io variants. */
export function decodeChannelMessage(msg: Uint8Array, base64: boolean): ChannelMessage | undefined {
  if (msg.length === 0) return undefined;
  let channel: number;
  let data: Uint8Array;
  if (base64) {
    channel = msg[0] - 0x30;
    data = Buffer.from(Buffer.from(msg.subarray(1)).toString('latin1'), 'base64');
  } else {
    channel = msg[0];
    data = msg.subarray(1);
  }
  if (channel === 3) return { channel: 3, status: Buffer.from(data).toString('utf8') };
  if (channel === 4) {
    try {
      const size = JSON.parse(Buffer.from(data).toString('utf8')) as { Width?: number; Height?: number };
      if (typeof size.Width === 'number' && typeof size.Height === 'number') return { channel: 4, width: size.Width, height: size.Height };
    } catch {
      /* malformed resize: recorded as nothing, still relayed */
    }
    return undefined;
  }
  if (channel === 255) return { channel: 255, closes: data[0] ?? -1 };
  return { channel, data };
}

/** Reads an asciicast v2 file's text back: header and events (used by tests and `sessions show`). */
export function parseAsciicast(text: string): { header: Record<string, unknown>; events: Array<[number, string, string]> } {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new Error('empty asciicast file');
  const header = JSON.parse(lines[0]) as Record<string, unknown>;
  if (header.version !== 2) throw new Error(`not an asciicast v2 file (version ${String(header.version)})`);
  if (typeof header.width !== 'number' || typeof header.height !== 'number') throw new Error('asciicast header needs width and height');
  let last = 0;
  const events = lines.slice(1).map((l, i) => {
    const e = JSON.parse(l) as unknown;
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'number' || typeof e[1] !== 'string' || typeof e[2] !== 'string') {
      throw new Error(`asciicast event ${i + 1} is not [time, code, data]`);
    }
    if (e[0] < last) throw new Error(`asciicast event ${i + 1} goes back in time`);
    last = e[0];
    return e as [number, string, string];
  });
  return { header, events };
}
