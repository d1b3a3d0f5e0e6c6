// Entry of the PostgreSQL audit store's I/O thread: workers do not inherit the TypeScript loader
// the main thread registered (bin/airlock.js), so register it here, then run the worker module.
import { register } from 'tsx/esm/api';
register();
await import('./postgres-store-worker.ts');
