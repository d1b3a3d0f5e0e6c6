// A FIFO of the responses a session still expects from the upstream. A client may pipeline
// 100k messages in one write, and every upstream response retires the head: Array#shift is O(n)
// per call on large arrays, which made one flooding session freeze all the others. This ring
// buffer makes push/shift O(1) (amortised) and keeps indexed access for the few scans the
// session does.
export class Deque<T> {
  private buf: (T | undefined)[];
  private head = 0;
  private size = 0;

  constructor(capacity = 16) {
    let c = 16;
    while (c < capacity) c *= 2;
    this.buf = new Array<T | undefined>(c);
  }

  get length(): number {
    return this.size;
  }

  push(v: T): void {
    if (this.size === this.buf.length) this.grow();
    this.buf[(this.head + this.size) & (this.buf.length - 1)] = v;
    this.size++;
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined; // no stale reference keeps a finished statement alive
    this.head = (this.head + 1) & (this.buf.length - 1);
    this.size--;
    return v;
  }

  /** The i-th element from the head (0 = head), undefined when out of range. */
  at(i: number): T | undefined {
    if (i < 0 || i >= this.size) return undefined;
    return this.buf[(this.head + i) & (this.buf.length - 1)];
  }

  first(): T | undefined {
    return this.at(0);
  }

  last(): T | undefined {
    return this.at(this.size - 1);
  }

  find(pred: (v: T) => unknown): T | undefined {
    for (let i = 0; i < this.size; i++) {
      const v = this.buf[(this.head + i) & (this.buf.length - 1)] as T;
      if (pred(v)) return v;
    }
    return undefined;
  }

  some(pred: (v: T) => unknown): boolean {
    for (let i = 0; i < this.size; i++) if (pred(this.buf[(this.head + i) & (this.buf.length - 1)] as T)) return true;
    return false;
  }

  /** Whether any element from index `from` on satisfies `pred`. */
  someFrom(from: number, pred: (v: T) => unknown): boolean {
    for (let i = Math.max(0, from); i < this.size; i++) if (pred(this.buf[(this.head + i) & (this.buf.length - 1)] as T)) return true;
    return false;
  }

  clear(): void {
    this.buf.fill(undefined);
    this.head = 0;
    this.size = 0;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.size; i++) yield this.buf[(this.head + i) & (this.buf.length - 1)] as T;
  }

  private grow(): void {
    const n = new Array<T | undefined>(this.buf.length * 2);
    for (let i = 0; i < this.size; i++) n[i] = this.buf[(this.head + i) & (this.buf.length - 1)];
    this.buf = n;
    this.head = 0;
  }
}
