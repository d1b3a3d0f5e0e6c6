// Loads airlock.yaml: YAML syntax errors and schema errors both name the file, the path inside
// the document and what was expected, so a broken config is fixed in one read.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { lintPolicy } from './rule-lint.ts';
import { configSchema, type AirlockConfig, type SecretRef } from './schema.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: AirlockConfig;
  /** Absolute path of the file, or '<inline>'. */
  file: string;
  /** Relative paths in the config (key files, store) resolve against this directory. */
  baseDir: string;
  /** Things that load but probably do not do what was meant (rules that can never match); logged at start. */
  warnings?: string[];
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  if (path.length === 0) return '(top level)';
  return path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join('');
}

function formatIssues(file: string, issues: z.core.$ZodIssue[]): string {
  const lines = issues.map((i) => `  ${formatPath(i.path)}: ${i.message}`);
  return `invalid config ${file}:\n${lines.join('\n')}`;
}

export function parseConfig(text: string, file = '<inline>', baseDir = process.cwd()): LoadedConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const where = e.linePos ? ` line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    throw new ConfigError(`invalid YAML in ${file}${where}: ${e.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS() ?? {};
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues(file, parsed.error.issues));
  return { config: parsed.data, file, baseDir, warnings: lintPolicy(parsed.data) };
}

export function loadConfig(path: string): LoadedConfig {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseConfig(text, file, dirname(file));
}

/** Resolves a secret reference; throws a ConfigError naming what is missing, never the value. */
export function resolveSecret(ref: SecretRef, baseDir: string, what: string): string {
  if ('env' in ref) {
    const v = process.env[ref.env];
    if (v === undefined || v === '') throw new ConfigError(`${what}: environment variable ${ref.env} is not set`);
    return v;
  }
  const p = resolve(baseDir, ref.file);
  try {
    return readFileSync(p, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`${what}: cannot read secret file ${p}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** Resolves a path written in the config relative to the config file. */
export function configPath(loaded: LoadedConfig, p: string): string {
  return resolve(loaded.baseDir, p);
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export function parseDuration(d: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(d);
  if (!m) throw new ConfigError(`invalid duration ${JSON.stringify(d)}: expected e.g. 30s, 10m, 1h`);
  return Number(m[1]) * units[m[2]];
}
