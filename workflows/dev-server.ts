// A local Temporal server (the official CLI's `server start-dev`) for tests and the offline demo.
// We spawn it ourselves rather than through @temporalio/testing so the search attributes, the
// SQLite file and the readiness check are explicit, and a missing binary is a clear error.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Connection } from '@temporalio/client';
import { freePort } from '../gateway/net/free-port.ts';
import { SEARCH_ATTRIBUTES } from './search-attributes.ts';
import { temporalCliPath } from './temporal-cli.ts';

export interface DevServerOptions {
  /** SQLite file that keeps workflows across restarts; in memory when omitted. */
  dbFile?: string;
  /** Front-end gRPC port; a free one when omitted. */
  port?: number;
  namespace?: string;
  /** How long to wait for the server to answer. Default 60 s (first start on a busy 2-core box). */
  readyTimeoutMs?: number;
  /** Serve the Temporal Web UI (on this port, or a free one with `true`); headless when omitted. */
  ui?: boolean | number;
}

export interface DevServer {
  /** host:port for Connection.connect / NativeConnection.connect. */
  address: string;
  namespace: string;
  /** The Web UI's URL, when started with `ui`. */
  uiUrl?: string;
  stop(): Promise<void>;
}

/** Thrown when the server process exits before it is ready (e.g. a port taken meanwhile). */
class ExitedEarly extends Error {}

export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  // Ports we picked ourselves can be taken by another process between the pick and the bind (tests
  // run in parallel): a server that exits before it is ready is started again on fresh ports.
  const ours = opts.port === undefined && (opts.ui === undefined || typeof opts.ui === 'boolean');
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (!(err instanceof ExitedEarly) || !ours || attempt >= 3) throw err;
    }
  }
}

async function startOnce(opts: DevServerOptions): Promise<DevServer> {
  const cli = temporalCliPath();
  const namespace = opts.namespace ?? 'default';
  const port = opts.port ?? (await freePort());
  const address = `127.0.0.1:${port}`;
  const uiPort = opts.ui === undefined || opts.ui === false ? undefined : opts.ui === true ? await freePort() : opts.ui;
  const ui = uiPort === undefined ? ['--headless'] : ['--ui-ip', '127.0.0.1', '--ui-port', String(uiPort), '--ui-disable-news-fetch'];
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), ...ui, '--log-level', 'error'];
  if (opts.dbFile) {
    const db = resolve(opts.dbFile);
    mkdirSync(dirname(db), { recursive: true });
    args.push('--db-filename', db);
  }
  if (namespace !== 'default') args.push('--namespace', namespace);
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);

  // A small sh watchdog owns the server: it stops it when we ask (SIGTERM) and also when this
  // process dies without asking (a killed test runner), so no dev server outlives its parent.
  const watchdog = [
    '"$0" "$@" & c=$!',
    "trap 'kill $c 2>/dev/null; wait $c; exit 0' TERM INT",
    `while kill -0 ${process.pid} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 1; done`,
    'kill $c 2>/dev/null; wait $c',
  ].join('\n');
  const child = spawn('/bin/sh', ['-c', watchdog, cli, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((res) => child.once('exit', (code, signal) => ((exited = { code, signal }), res())));
  child.once('error', (err) => {
    stderr += `\n${err.message}`;
  });
  // A test runner killed mid-test must not leave a server behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exitPromise;
    clearTimeout(t);
  };

  try {
    await waitReady(address, namespace, child, () => exited, () => stderr, opts.readyTimeoutMs ?? 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, namespace, stop, ...(uiPort !== undefined ? { uiUrl: `http://127.0.0.1:${uiPort}/namespaces/${encodeURIComponent(namespace)}/workflows` } : {}) };
}

async function waitReady(
  address: string,
  namespace: string,
  child: ChildProcess,
  exited: () => { code: number | null; signal: NodeJS.Signals | null } | undefined,
  stderr: () => string,
  timeoutMs: number,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    const e = exited();
    if (e) throw new ExitedEarly(`temporal dev server exited (code ${e.code ?? e.signal}) before it was ready: ${stderr().trim() || 'no output'}`);
    let conn: Connection | undefined;
    try {
      conn = await Connection.connect({ address, connectTimeout: 1000 });
      // The namespace exists once the server has finished bootstrapping.
      await conn.withDeadline(Date.now() + 2000, () => conn!.workflowService.describeNamespace({ namespace }));
      return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    } finally {
      await conn?.close().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error(`temporal dev server at ${address} not ready after ${timeoutMs} ms: ${last}; ${stderr().trim()}`);
}
