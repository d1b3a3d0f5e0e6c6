/** Deterministic PRNG (mulberry32, the demo data's) for generated test inputs, so a failure names a reproducible seed. */
export { prng as rng } from '../../gateway/demo/sample-data.ts';
