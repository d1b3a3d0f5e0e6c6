// Identity commands: `airlock revoke|unrevoke|revocations` (operators), `airlock keys generate`,
// and the human side: `airlock login|logout|whoami|psql` (gateway/auth/login.ts).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { configPath, loadConfig } from '../config/load.ts';

const DEFAULT_CONFIG = process.env.AIRLOCK_CONFIG ?? 'airlock.yaml';

export function addIdentityCommands(program: Command, fail: (m: string) => Error): void {
  const withConfig = (c: Command) => c.option('-c, --config <file>', 'config file (or AIRLOCK_CONFIG)', DEFAULT_CONFIG);

  withConfig(program.command('revoke').description('revoke an identity or a token id; every gateway ends its sessions within auth.revocationPoll'))
    .option('--identity <name>', 'identity to revoke (all its tokens and sessions)')
    .option('--token <jti>', 'token id (jti) to revoke')
    .requiredOption('--reason <text>', 'why (shown to the client and recorded)')
    .option('--by <name>', 'who revokes', process.env.USER ?? 'operator')
    .action(async (o: { config: string; identity?: string; token?: string; reason: string; by: string }) => {
      if (!!o.identity === !!o.token) throw fail('give exactly one of --identity NAME or --token JTI');
      const { AuthStateStore } = await import('../auth/revocation.ts');
      const loaded = loadConfig(o.config);
      const st = AuthStateStore.open(configPath(loaded, loaded.config.auth.stateFile));
      try {
        st.revoke(o.identity ? 'identity' : 'token', (o.identity ?? o.token)!, o.reason, o.by);
      } finally {
        st.close();
      }
      process.stdout.write(`revoked ${o.identity ? `identity ${o.identity}` : `token ${o.token}`}; gateways end its sessions within ${loaded.config.auth.revocationPoll}\n`);
    });

  withConfig(program.command('unrevoke').description('lift a revocation'))
    .option('--identity <name>')
    .option('--token <jti>')
    .action(async (o: { config: string; identity?: string; token?: string }) => {
      if (!!o.identity === !!o.token) throw fail('give exactly one of --identity NAME or --token JTI');
      const { AuthStateStore } = await import('../auth/revocation.ts');
      const loaded = loadConfig(o.config);
      const st = AuthStateStore.open(configPath(loaded, loaded.config.auth.stateFile));
      try {
        if (!st.unrevoke(o.identity ? 'identity' : 'token', (o.identity ?? o.token)!)) throw fail('no such revocation');
      } finally {
        st.close();
      }
      process.stdout.write('revocation lifted\n');
    });

  withConfig(program.command('revocations').description('list revocations')).action(async (o: { config: string }) => {
    const { AuthStateStore } = await import('../auth/revocation.ts');
    const loaded = loadConfig(o.config);
    const st = AuthStateStore.open(configPath(loaded, loaded.config.auth.stateFile));
    try {
      for (const r of st.list()) process.stdout.write(`${r.kind}\t${r.value}\t${r.at.toISOString()}\t${r.by}\t${r.reason}\n`);
    } finally {
      st.close();
    }
  });

  program
    .command('keys')
    .description('token signing keys')
    .command('generate')
    .description('write a new signing key pair (PEM) for auth.keys')
    .option('--alg <alg>', 'ES256 or EdDSA', 'EdDSA')
    .requiredOption('--out <file>', 'private key file (mode 0600); the public key goes to FILE.pub')
    .action(async (o: { alg: string; out: string }) => {
      if (o.alg !== 'ES256' && o.alg !== 'EdDSA') throw fail('--alg must be ES256 or EdDSA');
      const { generateSigningKey } = await import('../auth/keys.ts');
      const k = generateSigningKey(o.alg);
      writeFileSync(o.out, k.privateKey, { mode: 0o600, flag: 'wx' });
      writeFileSync(`${o.out}.pub`, k.publicKey, { mode: 0o644, flag: 'wx' });
      process.stdout.write(`wrote ${o.out} and ${o.out}.pub (${o.alg})\n`);
    });

  program
    .command('login')
    .description('sign in at your identity provider (browser with PKCE, or --device) and cache a short-lived Airlock credential')
    .option('--issuer <url>', 'OIDC issuer (default: auth.login.issuer of --config)')
    .option('--client-id <id>', 'OIDC client id (default: auth.login.clientId)')
    .option('--airlock <url>', 'Airlock HTTP listener, e.g. https://airlock.example.com:8443 (default: auth.login.airlockUrl)')
    .option('--scopes <scopes>', 'requested scopes')
    .option('--device', 'device authorization grant (headless machines)')
    .option('-c, --config <file>', 'read defaults from this config file')
    .action(async (o: { issuer?: string; clientId?: string; airlock?: string; scopes?: string; device?: boolean; config?: string }) => {
      const { login } = await import('../auth/login.ts');
      const d = o.config ? loadConfig(o.config).config.auth.login : undefined;
      const issuer = o.issuer ?? d?.issuer;
      const clientId = o.clientId ?? d?.clientId;
      const airlockUrl = o.airlock ?? d?.airlockUrl;
      if (!issuer || !clientId || !airlockUrl) throw fail('give --issuer, --client-id and --airlock (or a --config with auth.login)');
      const cred = await login({
        issuer,
        clientId,
        airlockUrl,
        scopes: o.scopes ?? d?.scopes ?? 'openid email profile groups offline_access',
        device: !!o.device,
        prompt: (m) => process.stderr.write(m + '\n'),
      });
      process.stdout.write(`logged in as ${cred.identity} (groups: ${cred.groups.join(', ') || 'none'}); Airlock token valid until ${new Date(cred.expiresAt).toISOString()}\n`);
    });

  program.command('logout').description('forget the cached credential (and revoke the IdP refresh token when possible)').action(async () => {
    const { logout } = await import('../auth/login.ts');
    process.stdout.write((await logout()) ? 'logged out\n' : 'not logged in\n');
  });

  program
    .command('whoami')
    .description('the identity, groups and expiry of the cached credential (refreshed if needed)')
    .option('--json', 'machine-readable output')
    .option('-c, --config <file>', 'also show open elevation windows (airlock request) from this config\'s store')
    .option('--token <token>', 'with --config: an Airlock token instead of the cached credential (or AIRLOCK_TOKEN)')
    .action(async (o: { json?: boolean; config?: string; token?: string }) => {
      if (o.config) {
        // The token's identity (verified with the config's keys) and its open elevation windows.
        const loaded = loadConfig(o.config);
        const { tokenIdentity, elevationLine } = await import('./request.ts');
        const { openStore } = await import('../recording/open.ts');
        const who = await tokenIdentity(loaded, o.token);
        const store = openStore(loaded);
        try {
          const open = store.listElevations({ identity: who.name, activeAt: new Date() });
          const info = { identity: who.name, groups: who.groups, ...(who.owner ? { owner: who.owner } : {}), elevations: open.map((e) => ({ id: e.id, role: e.role, connection: e.connection, until: e.until.toISOString(), breakGlass: e.breakGlass })) };
          process.stdout.write(o.json ? JSON.stringify(info) + '\n' : `${who.name}\ngroups: ${who.groups.join(', ') || 'none'}\n${open.length === 0 ? 'elevated: no\n' : open.map((e) => `elevated: ${elevationLine(e)}\n`).join('')}`);
        } finally {
          store.close();
        }
        return;
      }
      const { freshCredential } = await import('../auth/login.ts');
      const c = await freshCredential();
      const info = { identity: c.identity, groups: c.groups, issuer: c.issuer, expiresAt: new Date(c.expiresAt).toISOString() };
      process.stdout.write(o.json ? JSON.stringify(info) + '\n' : `${info.identity}\ngroups: ${info.groups.join(', ') || 'none'}\nidentity provider: ${info.issuer}\nAirlock token valid until ${info.expiresAt}\n`);
    });

  program
    .command('psql')
    .description('run psql against an Airlock PostgreSQL connection with a fresh token (never paste tokens)')
    .argument('<connection>', 'connection name (the dbname at Airlock)')
    .option('--host <host>', 'Airlock PostgreSQL listener host', process.env.AIRLOCK_PGHOST ?? '127.0.0.1')
    .option('--port <port>', 'Airlock PostgreSQL listener port', process.env.AIRLOCK_PGPORT ?? '6432')
    .option('--print', 'print the connection string instead of running psql')
    .allowExcessArguments(true)
    .action(async (connection: string, o: { host: string; port: string; print?: boolean }, cmd: Command) => {
      const { freshCredential } = await import('../auth/login.ts');
      const c = await freshCredential();
      const conninfo = `host=${o.host} port=${o.port} dbname=${connection} user=${c.identity}`;
      if (o.print) {
        process.stdout.write(`PGPASSWORD=${c.token} psql "${conninfo}"\n`);
        return;
      }
      const extra = cmd.args.slice(1);
      const child = spawn('psql', [conninfo, ...extra], { stdio: 'inherit', env: { ...process.env, PGPASSWORD: c.token } });
      process.exitCode = await new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    });
}
