// Tests use the same embedded PostgreSQL launcher as `airlock demo`.
export { startPostgres, type RunningPostgres } from '../../gateway/demo/embedded-postgres.ts';
