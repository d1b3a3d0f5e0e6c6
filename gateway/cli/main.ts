// `airlock` command line. Each subcommand loads only what it needs (Temporal and the SQL parser
// are heavy), so `airlock token` stays instant.
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig, parseDuration, type LoadedConfig } from '../config/load.ts';
import { approvalsCommand } from './approvals.ts';
import { auditCommand } from './audit.ts';
import { requestCommand } from './request.ts';
import { addIdentityCommands } from './identity.ts';

const DEFAULT_CONFIG = process.env.AIRLOCK_CONFIG ?? 'airlock.yaml';

function configOption(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'config file (or AIRLOCK_CONFIG)', DEFAULT_CONFIG);
}

async function waitForSignal(): Promise<void> {
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

/**
 * SIGTERM drains (running statements finish, up to shutdown.drainTimeout), SIGINT shuts down
 * fast (running statements are ended), SIGQUIT exits at once (the audit store is still closed,
 * which writes what it holds). A second SIGTERM or SIGINT during a shutdown forces it.
 */
async function runUntilSignalled(gw: { shutdown(mode: 'drain' | 'fast'): Promise<void>; store: { close(): void } }, announce: () => void): Promise<void> {
  const say = (m: string) => process.stderr.write(`airlock: ${m}\n`);
  const mode = await new Promise<'drain' | 'fast' | 'immediate'>((resolve) => {
    process.once('SIGTERM', () => resolve('drain'));
    process.once('SIGINT', () => resolve('fast'));
    process.once('SIGQUIT', () => resolve('immediate'));
    // Announced once the signals are handled: a supervisor that signals on "listening" is obeyed.
    announce();
  });
  if (mode === 'immediate') {
    say('SIGQUIT: exiting now');
    try {
      gw.store.close();
    } finally {
      process.exit(0);
    }
  }
  const force = (sig: string) => {
    say(`${sig} again: forcing shutdown`);
    try {
      gw.store.close();
    } finally {
      process.exit(1);
    }
  };
  process.once('SIGTERM', () => force('SIGTERM'));
  process.once('SIGINT', () => force('SIGINT'));
  process.once('SIGQUIT', () => force('SIGQUIT'));
  say(mode === 'drain' ? 'SIGTERM: draining (no new connections; running statements finish; SIGTERM again forces)' : 'SIGINT: shutting down (running statements are ended; SIGINT again forces)');
  await gw.shutdown(mode);
  say('shutdown complete');
  process.exit(0);
}

/** Mints a token; groups and owner default to the identity's entry in the config. */
async function mintFor(loaded: LoadedConfig, identity: string, groupList?: string, owner?: string, ttl?: string): Promise<string> {
  const { configuredIdentity, tokenSettings } = await import('../auth/settings.ts');
  const { mintToken } = await import('../auth/tokens.ts');
  const known = configuredIdentity(loaded, identity);
  const groups = groupList !== undefined ? groupList.split(',').map((g) => g.trim()).filter(Boolean) : known.groups;
  const settings = tokenSettings(loaded);
  return mintToken(settings, { name: identity, groups, owner: owner ?? known.owner }, ttl ? parseDuration(ttl) : settings.defaultTtlMs);
}

export function buildCli(): Command {
  const program = new Command('airlock')
    .description('Access gateway for agents and humans: block, mask, limit, record and hold operations on PostgreSQL')
    .exitOverride()
    .showHelpAfterError();

  configOption(
    program.command('gateway').description('start the gateway listeners').option('--workers <n>', 'gateway worker processes: auto (one per CPU) or a number; 1 serves from this process (default: gateway.workers)'),
  ).action(async (o: { config: string; workers?: string }) => {
    const loaded = loadConfig(o.config);
    const cluster = (await import('node:cluster')).default;
    const { WORKER_INDEX_ENV, workerCount, MAX_WORKERS } = await import('../cluster/protocol.ts');
    const index = Number(process.env[WORKER_INDEX_ENV]);
    if (cluster.isWorker && Number.isInteger(index) && index >= 1) {
      const { runWorker } = await import('../cluster/worker.ts');
      const { log } = await import('../log.ts');
      await runWorker(loaded, index, log);
      return;
    }
    let setting: 'auto' | number = loaded.config.gateway.workers;
    if (o.workers !== undefined) {
      if (o.workers !== 'auto' && !(/^\d+$/.test(o.workers) && Number(o.workers) >= 1 && Number(o.workers) <= MAX_WORKERS)) throw new CliError(`--workers: give auto or a number from 1 to ${MAX_WORKERS}, not ${o.workers}`);
      setting = o.workers === 'auto' ? 'auto' : Number(o.workers);
    }
    const workers = workerCount(setting);
    if (workers > 1) {
      const { startPrimary } = await import('../cluster/primary.ts');
      const { log } = await import('../log.ts');
      const primary = await startPrimary(loaded, workers, log);
      const { installCrashGuard } = await import('../app.ts');
      installCrashGuard();
      await runUntilSignalled(primary, () => {
        for (const l of primary.listeners) process.stderr.write(`airlock: ${l.protocol} gateway listening on ${l.host}:${l.port}${l.detail ? ` (${l.detail})` : ''}\n`);
        process.stderr.write(`airlock: ${workers} gateway workers: ${primary.workers().map((w) => `worker ${w.index} pid ${w.pid}`).join(', ')}\n`);
      });
      return;
    }
    const { installCrashGuard, startGateway } = await import('../app.ts');
    const gw = await startGateway(loaded);
    installCrashGuard();
    await runUntilSignalled(gw, () => {
      for (const l of gw.listeners) process.stderr.write(`airlock: ${l.protocol} gateway listening on ${l.host}:${l.port}${l.detail ? ` (${l.detail})` : ''}\n`);
    });
  });

  configOption(program.command('token').description('print a short-lived signed token for an identity'))
    .requiredOption('-i, --identity <name>', 'identity the token is for')
    .option('-g, --groups <list>', 'comma-separated groups (default: the identity\'s groups in the config)')
    .option('--owner <name>', 'human who owns this agent identity (default: from the config)')
    .option('--ttl <duration>', 'lifetime, e.g. 10m (default: auth.defaultTtl)')
    .action(async (o: { config: string; identity: string; groups?: string; owner?: string; ttl?: string }) => {
      process.stdout.write((await mintFor(loadConfig(o.config), o.identity, o.groups, o.owner, o.ttl)) + '\n');
    });

  configOption(program.command('kubeconfig').description('print a kubeconfig that points kubectl at Airlock with a short-lived token'))
    .requiredOption('--connection <name>', 'Kubernetes cluster connection (http.clusters[].name)')
    .option('-i, --identity <name>', 'identity to mint a token for')
    .option('-g, --groups <list>', 'comma-separated groups (default: the identity\'s groups in the config)')
    .option('--ttl <duration>', 'token lifetime (default: auth.defaultTtl)')
    .option('--token <token>', 'use this Airlock token instead of minting one')
    .option('--server <url>', 'gateway URL as clients reach it (default: http.listen)')
    .action(async (o: { config: string; connection: string; identity?: string; groups?: string; ttl?: string; token?: string; server?: string }) => {
      const { kubeconfigFor } = await import('../kubernetes/kubeconfig.ts');
      const loaded = loadConfig(o.config);
      let token = o.token;
      if (!token) {
        if (!o.identity) throw new CliError('give --identity NAME (to mint a token) or --token TOKEN');
        token = await mintFor(loaded, o.identity, o.groups, undefined, o.ttl);
      }
      process.stdout.write(kubeconfigFor(loaded, o.connection, token, o.server));
    });

  configOption(program.command('mcp').description('MCP over stdio for a local agent, relayed to the gateway\'s MCP endpoint (mcp.listen)'))
    .option('--url <url>', 'the gateway\'s MCP endpoint (default: from mcp.listen / mcp.resource)')
    .option('--token <token>', 'Airlock token (default: AIRLOCK_TOKEN, or minted for --identity)')
    .option('-i, --identity <name>', 'identity to mint a token for (needs the signing key)')
    .action(async (o: { config: string; url?: string; token?: string; identity?: string }) => {
      const { runStdioBridge } = await import('../mcp/stdio.ts');
      let url = o.url;
      let token = o.token ?? process.env.AIRLOCK_TOKEN;
      if (!url || (!token && o.identity)) {
        const loaded = loadConfig(o.config);
        const m = loaded.config.mcp;
        if (!url) {
          if (!m) throw new CliError('no mcp block in the config; give --url');
          url = m.resource ?? `http://${m.listen.host}:${m.listen.port}/mcp`;
        }
        if (!token && o.identity) token = await mintFor(loaded, o.identity);
      }
      if (!token) throw new CliError('give --token, AIRLOCK_TOKEN or --identity');
      await runStdioBridge({ url, token, onError: (err) => process.stderr.write(`airlock mcp: ${err.message}\n`) });
    });

  const sessions = program.command('sessions').description('recorded sessions and what happened in them');
  configOption(sessions.command('list').description('list recent sessions'))
    .option('--identity <name>')
    .option('--connection <name>')
    .option('-n, --limit <n>', 'how many', '50')
    .option('--json', 'machine-readable output')
    .action(async (o: { config: string; identity?: string; connection?: string; limit: string; json?: boolean }) => {
      const { openStore } = await import('../recording/open.ts');
      const { formatSessionList, sessionToJson } = await import('../recording/format.ts');
      const store = openStore(loadConfig(o.config), { signer: false });
      try {
        const rows = store.listSessions({ identity: o.identity, connection: o.connection, limit: Number(o.limit) });
        process.stdout.write(o.json ? JSON.stringify(rows.map((r) => sessionToJson(r)), null, 2) + '\n' : formatSessionList(rows));
      } finally {
        store.close();
      }
    });
  configOption(sessions.command('show').description('show one session with every operation').argument('<id>', 'session id, or a unique prefix of it (as `sessions list` prints)'))
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { config: string; json?: boolean }) => {
      const { openStore } = await import('../recording/open.ts');
      const { formatSessionDetail, sessionDetailToJson } = await import('../recording/format.ts');
      const store = openStore(loadConfig(o.config), { signer: false });
      try {
        const d = store.getSession(resolveSessionId(store, id));
        if (!d) throw new CliError(`no session ${id}; see \`airlock sessions list\``);
        const audit = d.operations.flatMap((op) => (op.approval ? store.listAudit(op.approval.requestId) : []));
        process.stdout.write(o.json ? JSON.stringify(sessionDetailToJson(d, audit), null, 2) + '\n' : formatSessionDetail(d, audit));
      } finally {
        store.close();
      }
    });

  configOption(program.command('console').description('serve the read-only auditor console (sessions, timelines, recordings, approvals, chain status)'))
    .option('--host <host>', 'listen address (default: console.listen.host or 127.0.0.1)')
    .option('--port <port>', 'listen port (default: console.listen.port or 7480)')
    .action(async (o: { config: string; host?: string; port?: string }) => {
      const { openConsole } = await import('../console/open.ts');
      const loaded = loadConfig(o.config);
      const c = await openConsole(loaded, { host: o.host, port: o.port !== undefined ? Number(o.port) : undefined });
      process.stderr.write(`airlock: auditor console at ${c.url} (log in with a token: airlock token -i NAME -g ${(loaded.config.console?.groups ?? ['auditors'])[0]})\n`);
      await waitForSignal();
      await c.close();
    });

  configOption(program.command('worker').description('run the approval worker (Temporal workflows, chat bots)')).action(async (o: { config: string }) => {
    const { startApprovalService } = await import('../../workflows/service.ts');
    const svc = await startApprovalService(loadConfig(o.config));
    process.stderr.write(`airlock: approval worker running (${svc.description})\n`);
    await waitForSignal();
    await svc.shutdown();
  });

  program
    .command('demo')
    .description('offline demo: embedded PostgreSQL with fake PII, local Temporal, the gateway and a local approval channel')
    .option('--dir <dir>', 'working directory for the demo', '.airlock/demo')
    .option('--tour-only', 'run the scripted tour and exit (no interactive session)')
    .action(async (o: { dir: string; tourOnly?: boolean }) => {
      const { runDemo } = await import('../demo/demo.ts');
      await runDemo({ dir: o.dir, interactive: !o.tourOnly, waitForExit: waitForSignal });
    });

  return program;
}

export class CliError extends Error {}

/** The full id for `id` or a unique prefix of one (the short ids `sessions list` prints). */
export function resolveSessionId(store: { getSession(id: string): unknown; findSessionIds(prefix: string, limit?: number): string[] }, id: string): string {
  if (store.getSession(id)) return id;
  const matches = store.findSessionIds(id, 6);
  if (matches.length === 1) return matches[0];
  if (matches.length === 0) throw new CliError(`no session ${id}; see \`airlock sessions list\``);
  throw new CliError(`session id ${id} is ambiguous: ${matches.slice(0, 5).join(', ')}${matches.length > 5 ? ', …' : ''}; give more characters`);
}

export async function main(argv: string[]): Promise<void> {
  const program = buildCli();
  program.addCommand(approvalsCommand());
  program.addCommand(auditCommand());
  program.addCommand(requestCommand());
  addIdentityCommands(program, (m) => new CliError(m));
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof ConfigError || err instanceof CliError) {
      process.stderr.write(`airlock: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`airlock: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}

