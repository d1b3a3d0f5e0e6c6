// Starts the console for a config: `airlock console` (its own read-only store handle) and
// `airlock gateway` with `console.enabled` (the gateway's store).
import { configPath, type LoadedConfig } from '../config/load.ts';
import { SqliteStore } from '../recording/sqlite-store.ts';
import type { ConsoleStore } from './data.ts';
import { assertConsoleAssets, consoleOptions, startConsole, type RunningConsole } from './server.ts';

export interface OpenConsoleOptions {
  host?: string;
  port?: number;
  /** Read this store (the caller closes it) instead of opening the configured SQLite file read-only. */
  store?: ConsoleStore;
}

export async function openConsole(loaded: LoadedConfig, o: OpenConsoleOptions = {}): Promise<RunningConsole> {
  assertConsoleAssets();
  const own = o.store ? undefined : SqliteStore.open(configPath(loaded, loaded.config.store.sqlite), { readonly: true });
  const store = o.store ?? (own as SqliteStore);
  try {
    const listen = loaded.config.console?.listen ?? { host: '127.0.0.1', port: 7480 };
    const running = await startConsole(consoleOptions(loaded, store), o.host ?? listen.host, o.port ?? listen.port);
    return {
      ...running,
      async close() {
        await running.close();
        own?.close();
      },
    };
  } catch (e) {
    own?.close();
    throw e;
  }
}
