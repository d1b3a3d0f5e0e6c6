// Routes the Temporal SDK's own logs (worker state, activity failures) into Airlock's pino logger
// instead of raw console output. The SDK runtime is process-global and can be configured only
// before its first use, so call this before creating any NativeConnection or Worker.
import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import { log } from '../gateway/log.ts';

let done = false;

const LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

export function installTemporalLogging(): void {
  if (done) return;
  done = true;
  const logger = new DefaultLogger('INFO', (entry) => {
    const meta = { ...(entry.meta ?? {}), component: 'temporal' };
    log[LEVEL[entry.level]](meta, entry.message);
  });
  try {
    Runtime.install({ logger });
  } catch {
    // Already installed by the host process: keep its choice.
  }
}
