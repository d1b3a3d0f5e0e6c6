import { configPath, type LoadedConfig } from '../config/load.ts';
import { SqliteStore } from './sqlite-store.ts';
import type { Store } from './store.ts';

/** Opens the store the config names (SQLite path relative to the config file). */
export function openStore(loaded: LoadedConfig): Store {
  return SqliteStore.open(configPath(loaded, loaded.config.store.sqlite));
}
