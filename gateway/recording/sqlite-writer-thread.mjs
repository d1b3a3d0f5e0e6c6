// Entry of the SQLite audit store's writer thread: workers do not inherit the TypeScript loader
// the main thread registered (bin/airlock.js), so register it here, then run the writer module.
import { register } from 'tsx/esm/api';
register();
await import('./sqlite-writer-thread.ts');
