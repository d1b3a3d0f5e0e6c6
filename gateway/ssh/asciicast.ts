// asciicast v2 writer (https://docs.asciinema.org/manual/asciicast/v2/): a JSON header line,
// then one `[seconds, code, data]` line per event: "o" output, "i" input, "r" resize ("COLSxROWS").
// Written as the session runs (append, no buffering of the whole session), so a long shell is
// on disk even if the gateway dies; replayable with `asciinema play` or asciinema-player.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { Writable } from 'node:stream';

export interface CastHeader {
  width: number;
  height: number;
  title?: string;
  env?: Record<string, string>;
}

export class AsciicastWriter {
  readonly path: string;
  private readonly out: WriteStream;
  private readonly started = process.hrtime.bigint();
  // Terminal output is UTF-8 cut at arbitrary packet boundaries; keep partial characters.
  private readonly outDecoder = new StringDecoder('utf8');
  private readonly inDecoder = new StringDecoder('utf8');
  private closed = false;
  events = 0;

  constructor(path: string, header: CastHeader) {
    this.path = path;
    mkdirSync(dirname(path), { recursive: true });
    this.out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
    this.out.on('error', () => {
      // Reported by close(); a failing disk must not kill the session's data path.
      this.closed = true;
    });
    const h: Record<string, unknown> = {
      version: 2,
      width: header.width,
      height: header.height,
      timestamp: Math.floor(Date.now() / 1000),
    };
    if (header.title) h.title = header.title;
    if (header.env) h.env = header.env;
    this.out.write(JSON.stringify(h) + '\n');
  }

  private elapsed(): number {
    return Math.round(Number(process.hrtime.bigint() - this.started) / 1e3) / 1e6;
  }

  private event(code: 'o' | 'i' | 'r', data: string): void {
    if (this.closed || data === '') return;
    this.events++;
    this.out.write(JSON.stringify([this.elapsed(), code, data]) + '\n');
  }

  output(chunk: Buffer): void {
    this.event('o', this.outDecoder.write(chunk));
  }

  input(chunk: Buffer): void {
    this.event('i', this.inDecoder.write(chunk));
  }

  /**
   * A Writable taking output (or input) for the recording that applies backpressure: a write is
   * acknowledged only while the file has less than `maxBuffered` bytes queued, so a slow disk
   * pauses the channel (through pipe) instead of growing the gateway's memory.
   */
  sink(code: 'o' | 'i', maxBuffered: number, onLimit?: () => void): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (code === 'o') this.output(chunk);
        else this.input(chunk);
        if (this.closed || this.out.writableLength <= maxBuffered) return cb();
        onLimit?.();
        const done = () => {
          this.out.off('drain', done);
          this.out.off('close', done);
          cb();
        };
        this.out.on('drain', done);
        this.out.on('close', done);
      },
    });
  }

  resize(cols: number, rows: number): void {
    this.event('r', `${cols}x${rows}`);
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.event('o', this.outDecoder.end());
      this.closed = true;
    }
    return new Promise((resolve) => {
      if (this.out.closed) return resolve();
      this.out.end(() => resolve());
    });
  }
}
