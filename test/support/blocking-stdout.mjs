// Preloaded into every test process (scripts/test.sh, scripts/test-tier.sh). Under `node --test
// --test-force-exit` each test file runs in a child process that reports its results to the runner
// over stdout, a pipe, and force exit calls process.exit() without waiting for pending pipe writes:
// the last verdicts of a file could be lost while the run still exited 0, so tests went uncounted
// (nodejs/node#64833; seen here: 1357 of 1370 tests reported, the rest of one file missing).
// Blocking writes put every verdict in the pipe before the process can exit. Plain JavaScript, and
// a no-op in worker threads (which inherit the preload; their stdout is not a pipe of their own).
import { isMainThread } from 'node:worker_threads';

if (isMainThread) process.stdout._handle?.setBlocking?.(true);
