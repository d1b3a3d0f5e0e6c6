// Routes @slack/web-api and Bolt logging into Airlock's pino logger (structured, one format).
import { LogLevel, type Logger as SlackLogger } from '@slack/web-api';
import type { Logger } from '../../gateway/log.ts';

export function slackLogger(base: Logger): SlackLogger {
  let level: LogLevel = LogLevel.WARN;
  let logger = base;
  const fmt = (msg: unknown[]): string => msg.map((m) => (typeof m === 'string' ? m : m instanceof Error ? m.message : JSON.stringify(m))).join(' ');
  return {
    debug: (...msg: unknown[]) => logger.debug(fmt(msg)),
    info: (...msg: unknown[]) => logger.info(fmt(msg)),
    warn: (...msg: unknown[]) => logger.warn(fmt(msg)),
    error: (...msg: unknown[]) => logger.error(fmt(msg)),
    setLevel: (l: LogLevel) => {
      level = l;
    },
    getLevel: () => level,
    setName: (name: string) => {
      logger = base.child({ slack: name });
    },
  };
}
