// Entry of bench-pg's `segment` prototype thread: workers do not inherit the TypeScript loader.
import { register } from 'tsx/esm/api';
register();
await import('./bench-segment-thread.ts');
