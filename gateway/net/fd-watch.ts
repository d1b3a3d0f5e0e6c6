// File-descriptor exhaustion is silent in Node: when accept() fails with EMFILE, libuv closes
// its reserve descriptor, accepts and drops the waiting connections, and reports nothing, so
// clients just see resets and the gateway logs nothing. This watches how many descriptors the
// process holds against its limit (Linux /proc) and says so loudly when it runs out.
import { readdirSync, readFileSync } from 'node:fs';

/** The soft RLIMIT_NOFILE of this process, when the platform tells (Linux). */
export function fdLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const n = Number(line?.split(/\s{2,}/)[1]);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/**
 * Calls `onExhausted` (at most every `everyMs`) while fewer than `margin` descriptors are left.
 * Returns a stop function. A no-op where the limit cannot be read.
 */
export function watchFds(onExhausted: (info: { open: number; limit: number }) => void, o: { intervalMs?: number; margin?: number; everyMs?: number } = {}): () => void {
  const limit = fdLimit();
  if (!limit) return () => {};
  const margin = o.margin ?? Math.max(8, Math.floor(limit * 0.02));
  let last = 0;
  const t = setInterval(() => {
    const open = openFds();
    if (open === undefined || open < limit - margin) return;
    const now = Date.now();
    if (now - last < (o.everyMs ?? 5_000)) return;
    last = now;
    onExhausted({ open, limit });
  }, o.intervalMs ?? 1_000);
  t.unref();
  return () => clearInterval(t);
}
