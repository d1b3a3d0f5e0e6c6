// One pino logger for the process. Level from AIRLOCK_LOG_LEVEL (default info; tests set silent).
import { pino, type Logger } from 'pino';

export type { Logger };

export const log: Logger = pino({
  name: 'airlock',
  level: process.env.AIRLOCK_LOG_LEVEL ?? (process.env.NODE_TEST_CONTEXT ? 'silent' : 'info'),
  redact: { paths: ['password', 'token', '*.password', '*.token'], censor: '[redacted]' },
});
