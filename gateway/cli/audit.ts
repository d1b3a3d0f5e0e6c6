// `airlock audit`: the tamper-evident audit trail for operators and auditors.
//   verify      offline check of the hash chain, the signed checkpoints and the tables
//   prune       retention (audit.retention or --before), keeping a signed checkpoint
//   public-key  the key auditors verify with
//   checkpoint  sign the chain head now (e.g. before handing a copy to an auditor)
import { existsSync, readFileSync } from 'node:fs';
import { Command } from 'commander';
import { ConfigError, loadConfig, parseDuration, type LoadedConfig } from '../config/load.ts';

const DEFAULT_CONFIG = process.env.AIRLOCK_CONFIG ?? 'airlock.yaml';

function withConfig(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'config file (or AIRLOCK_CONFIG)', DEFAULT_CONFIG);
}

/** A usage or input problem: printed without a stack, exit status 2. */
class AuditCliError extends Error {}

/** `2026-09-01`, `2026-09-01T12:00:00Z`, or a duration back from now (`90d`, `12h`). */
export function parseWhen(text: string, now = Date.now()): Date {
  const t = text.trim();
  if (/^\d+(ms|s|m|h|d)$/.test(t)) return new Date(now - parseDuration(t));
  const d = new Date(/^\d{4}-\d{2}-\d{2}$/.test(t) ? `${t}T00:00:00Z` : t);
  if (!Number.isFinite(d.getTime())) throw new AuditCliError(`not a date or a duration: ${JSON.stringify(text)} (e.g. 2026-09-01, 2026-09-01T12:00:00Z or 90d)`);
  return d;
}

async function run(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof AuditCliError || e instanceof ConfigError) {
      process.stderr.write(`airlock: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}

function tryConfig(path: string, needed: boolean): LoadedConfig | undefined {
  if (!needed && !existsSync(path)) return undefined;
  return loadConfig(path);
}

export function auditCommand(): Command {
  const cmd = new Command('audit').description('the tamper-evident audit trail: verify, prune, keys');

  withConfig(cmd.command('verify').description('check the hash chain, signed checkpoints and recorded sessions offline; names the first record changed, removed or inserted'))
    .option('--from <date>', 'verify what was recorded since the last checkpoint before this date (or duration ago, e.g. 7d)')
    .option('--public-key <file>', 'Ed25519 public key (PEM) to check checkpoint signatures (default: from audit.signingKey)')
    .option('--anchor <file>', 'checkpoints kept outside the store (default: audit.anchor.file)')
    .option('--db <file>', 'the store file to check, e.g. a copy (default: store.sqlite of the config)')
    .option('--json', 'machine-readable report')
    .action((o: { config: string; from?: string; publicKey?: string; anchor?: string; db?: string; json?: boolean }) =>
      run(async () => {
        const { configPath } = await import('../config/load.ts');
        const { parsePublicKey, parseCheckpoint, SigningKeyError } = await import('../recording/chain.ts');
        const { SqliteStore } = await import('../recording/sqlite-store.ts');
        const { formatVerifyReport } = await import('../recording/verify.ts');
        const { auditSigningKey } = await import('../recording/open.ts');
        const loaded = tryConfig(o.config, !o.db);
        const dbPath = o.db ?? (loaded ? configPath(loaded, loaded.config.store.sqlite) : '');
        let publicKey;
        try {
          if (o.publicKey) publicKey = parsePublicKey(readText(o.publicKey, 'public key'));
          else if (loaded) publicKey = auditSigningKey(loaded);
        } catch (e) {
          if (e instanceof SigningKeyError) throw new AuditCliError(`${o.publicKey ?? 'audit.signingKey'}: ${e.message}`);
          throw e;
        }
        const anchorPath = o.anchor ?? (loaded?.config.audit.anchor ? configPath(loaded, loaded.config.audit.anchor.file) : undefined);
        const anchored = anchorPath && (o.anchor || existsSync(anchorPath)) ? readText(anchorPath, 'anchor file').split('\n').filter((l) => l.trim()).map((l, i) => {
          const cp = parseCheckpoint(l);
          if (!cp) throw new AuditCliError(`${anchorPath} line ${i + 1} is not an Airlock checkpoint`);
          return cp;
        }) : undefined;
        // store.postgres: verify the shared database (no --db); otherwise the SQLite file read-only.
        const { postgresConnection } = await import('../recording/open.ts');
        const pg = !o.db && loaded ? postgresConnection(loaded) : undefined;
        const store = pg ? (await import('../recording/postgres-store.ts')).PostgresStore.open(pg) : SqliteStore.open(dbPath, { readonly: true });
        try {
          const report = store.verify({ publicKey, from: o.from ? parseWhen(o.from) : undefined, anchored });
          process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : formatVerifyReport(report));
          if (!report.ok) process.exitCode = 1;
        } finally {
          store.close();
        }
      }),
    );

  withConfig(cmd.command('prune').description('delete sessions, operations and audit events older than audit.retention (or --before), keeping a signed checkpoint'))
    .option('--before <date>', 'cutoff: a date, or a duration back from now (default: audit.retention)')
    .option('--public-key <file>', 'check checkpoint signatures before pruning (default: from audit.signingKey)')
    .action((o: { config: string; before?: string; publicKey?: string }) =>
      run(async () => {
        const { openStore } = await import('../recording/open.ts');
        const { parsePublicKey } = await import('../recording/chain.ts');
        const { PruneRefusedError } = await import('../recording/sqlite-store.ts');
        const { createPublicKey } = await import('node:crypto');
        const loaded = loadConfig(o.config);
        const retention = loaded.config.audit.retention;
        if (!o.before && !retention) throw new AuditCliError('give --before DATE or set audit.retention in the config');
        const before = o.before ? parseWhen(o.before) : new Date(Date.now() - parseDuration(retention as string));
        const store = openStore(loaded);
        try {
          const key = o.publicKey ? parsePublicKey(readText(o.publicKey, 'public key')) : undefined;
          const signer = loaded.config.audit.signingKey ? (await import('../recording/open.ts')).auditSigningKey(loaded) : undefined;
          const r = store.prune(before, { publicKey: key ?? (signer ? createPublicKey(signer) : undefined) });
          process.stdout.write(
            `pruned records older than ${before.toISOString()}: ${r.sessions} sessions, ${r.operations} operations, ${r.audit} audit events (${r.entries} chain entries; the chain now starts after entry #${r.base}${signer ? ', signed checkpoint kept' : ', UNSIGNED checkpoint kept: configure audit.signingKey'})\n`,
          );
        } catch (e) {
          if (e instanceof PruneRefusedError) {
            process.stderr.write(`airlock: ${e.message}\n`);
            process.exitCode = 1;
            return;
          }
          throw e;
        } finally {
          store.close();
        }
      }),
    );

  withConfig(cmd.command('public-key').description('print the public key auditors verify checkpoints with (PEM)')).action((o: { config: string }) =>
    run(async () => {
      const { auditSigningKey } = await import('../recording/open.ts');
      const { keyId, publicKeyPem } = await import('../recording/chain.ts');
      const key = auditSigningKey(loadConfig(o.config));
      if (!key) throw new AuditCliError('no audit.signingKey in the config: the chain is not signed');
      process.stdout.write(publicKeyPem(key));
      process.stderr.write(`key id ${keyId(key)}\n`);
    }),
  );

  withConfig(cmd.command('checkpoint').description('sign the chain head now (and append it to the anchor file)')).action((o: { config: string }) =>
    run(async () => {
      const { openStore } = await import('../recording/open.ts');
      const loaded = loadConfig(o.config);
      if (!loaded.config.audit.signingKey) throw new AuditCliError('no audit.signingKey in the config: nothing can sign');
      const store = openStore(loaded);
      try {
        const cp = store.checkpoint();
        process.stdout.write(cp ? `signed checkpoint #${cp.seq} ${cp.hash}\n` : 'the chain head is already covered by a checkpoint\n');
      } finally {
        store.close();
      }
    }),
  );

  withConfig(cmd.command('export').description('print the audit journal as JSON lines: Airlock records (jsonl) or OCSF events (ocsf)'))
    .option('--format <format>', 'jsonl | ocsf', 'jsonl')
    .option('--since <date>', 'records at or after this date (or duration ago, e.g. 7d)')
    .option('--after-seq <n>', 'records after this journal position (resume an earlier export)')
    .option('--db <file>', 'the store file (default: store.sqlite of the config)')
    .action((o: { config: string; format: string; since?: string; afterSeq?: string; db?: string }) =>
      run(async () => {
        if (o.format !== 'jsonl' && o.format !== 'ocsf') throw new AuditCliError(`--format must be jsonl or ocsf, not ${JSON.stringify(o.format)}`);
        const afterSeq = o.afterSeq === undefined ? 0 : Number(o.afterSeq);
        if (!Number.isInteger(afterSeq) || afterSeq < 0) throw new AuditCliError('--after-seq must be a non-negative integer');
        const { configPath } = await import('../config/load.ts');
        const { JournalReader, formatRecord } = await import('../recording/export.ts');
        const loaded = tryConfig(o.config, !o.db);
        const dbPath = o.db ?? configPath(loaded as LoadedConfig, (loaded as LoadedConfig).config.store.sqlite);
        let reader: InstanceType<typeof JournalReader>;
        try {
          reader = new JournalReader(dbPath);
        } catch (e) {
          throw new AuditCliError(`cannot read the audit store ${dbPath}: ${e instanceof Error ? e.message : String(e)}`);
        }
        try {
          const since = o.since ? parseWhen(o.since).getTime() : 0;
          for (let pos = afterSeq; ; ) {
            const batch = reader.read(pos, 1000, since);
            if (batch.length === 0) break;
            const text = batch.map((r) => formatRecord(r, o.format as 'jsonl' | 'ocsf', reader)).join('\n') + '\n';
            if (!process.stdout.write(text)) await new Promise((r) => process.stdout.once('drain', r));
            pos = batch[batch.length - 1].seq;
          }
        } finally {
          reader.close();
        }
      }),
    );

  withConfig(cmd.command('status').description('the audit journal head and each configured sink\'s position and lag'))
    .option('--json', 'machine-readable output')
    .action((o: { config: string; json?: boolean }) =>
      run(async () => {
        const { configPath } = await import('../config/load.ts');
        const { offlineSinkStatus } = await import('../recording/sinks.ts');
        const loaded = loadConfig(o.config);
        const sinks = offlineSinkStatus(configPath(loaded, loaded.config.store.sqlite), loaded.config.audit.sinks ?? []);
        if (o.json) return void process.stdout.write(JSON.stringify({ sinks }, null, 2) + '\n');
        if (sinks.length === 0) return void process.stdout.write('no audit.sinks configured\n');
        for (const s of sinks) process.stdout.write(`${s.name} (${s.type}): delivered through #${s.position} of #${s.head}, lag ${s.lag} entries\n`);
      }),
    );

  withConfig(cmd.command('receipt').description('print the signed receipt of a decided approval request (JSON), or check one: `receipt verify FILE`'))
    .argument('<request-id|verify>', 'approval request id, or `verify`')
    .argument('[file]', 'with verify: the receipt file (- for stdin)')
    .option('--public-key <file>', 'with verify: Ed25519 public key (PEM) (default: from audit.signingKey)')
    .option('--db <file>', 'the store file (default: store.sqlite of the config)')
    .action((first: string, file: string | undefined, o: { config: string; publicKey?: string; db?: string }) =>
      run(async () => {
        const { auditSigningKey } = await import('../recording/open.ts');
        const { parsePublicKey, SigningKeyError } = await import('../recording/chain.ts');
        const { receiptBody, signReceipt, verifyReceipt, ReceiptError } = await import('../recording/receipt.ts');
        if (first === 'verify') {
          if (!file) throw new AuditCliError('give the receipt file: airlock audit receipt verify FILE [--public-key audit.pub]');
          let key;
          try {
            key = o.publicKey ? parsePublicKey(readText(o.publicKey, 'public key')) : auditSigningKey(loadConfig(o.config));
          } catch (e) {
            if (e instanceof SigningKeyError) throw new AuditCliError(`${o.publicKey ?? 'audit.signingKey'}: ${e.message}`);
            throw e;
          }
          if (!key) throw new AuditCliError('give --public-key FILE (airlock audit public-key prints it)');
          const text = file === '-' ? readFileSync(0, 'utf8') : readText(file, 'receipt');
          const r = verifyReceipt(text, key);
          if (r.ok) process.stdout.write(`receipt for ${r.requestId} verified: signed by audit key ${r.keyId}\n`);
          else {
            process.stdout.write(`receipt${r.requestId ? ` for ${r.requestId}` : ''} NOT verified: ${r.reason}\n`);
            process.exitCode = 1;
          }
          return;
        }
        const { configPath } = await import('../config/load.ts');
        const { SqliteStore } = await import('../recording/sqlite-store.ts');
        const loaded = loadConfig(o.config);
        const key = auditSigningKey(loaded);
        if (!key) throw new AuditCliError('no audit.signingKey in the config: receipts are signed with it');
        const store = SqliteStore.open(o.db ?? configPath(loaded, loaded.config.store.sqlite), { readonly: true });
        try {
          process.stdout.write(JSON.stringify(signReceipt(receiptBody(store, first), key), null, 2) + '\n');
        } catch (e) {
          if (e instanceof ReceiptError) throw new AuditCliError(e.message);
          throw e;
        } finally {
          store.close();
        }
      }),
    );

  return cmd;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new AuditCliError(`cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}
