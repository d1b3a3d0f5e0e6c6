// A real OpenSSH server for tests: Debian's /usr/sbin/sshd on a loopback port, with its own
// generated host key and config in a temp dir (`-D -e -f cfg`), logging in as the current user
// (root in the dev container) with a generated key in its own AuthorizedKeysFile. Also real
// `ssh`/`scp` client helpers (token as password via SSH_ASKPASS, no terminal needed).
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.ts';

export interface RunningSshd {
  host: string;
  port: number;
  user: string;
  dir: string;
  /** `SHA256:...` of the server's host key. */
  hostKeyFingerprint: string;
  /** Private key (OpenSSH format) accepted by the server for `user`. */
  clientKeyPath: string;
  clientKey: string;
  /** Lines sshd wrote to stderr (-e), for diagnosing a failing test. */
  log(): string;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

function keygen(path: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], { stdio: 'ignore' });
}

/** `SHA256:...` fingerprint of a key file, as ssh-keygen prints it. */
export function fingerprintOf(path: string): string {
  const out = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', path], { encoding: 'utf8' });
  const m = /(SHA256:[A-Za-z0-9+/]+)/.exec(out);
  if (!m) throw new Error(`ssh-keygen -l printed no fingerprint: ${out}`);
  return m[1];
}

export function generateKey(dir: string, name: string): { path: string; key: string; publicLine: string; fingerprint: string } {
  const path = join(dir, name);
  keygen(path, name);
  return { path, key: readFileSync(path, 'utf8'), publicLine: readFileSync(`${path}.pub`, 'utf8').trim(), fingerprint: fingerprintOf(path) };
}

/**
 * The login user on the test sshd. As root, a dedicated unprivileged system user: sshd runs a
 * root login without privilege separation, and then refuses channel signals ("session
 * signalling requires privilege separation"), which the tests need.
 */
export const TEST_USER = 'airlock-ssh-test';

function ensureTestUser(): string {
  if (process.getuid?.() !== 0) return userInfo().username;
  try {
    execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
  } catch {
    try {
      // Password '*': no password login, but not "locked" ('!'), which sshd refuses without PAM.
      execFileSync('useradd', ['--system', '--create-home', '--shell', '/bin/bash', '--password', '*', TEST_USER], { stdio: 'ignore' });
    } catch (err) {
      // Another test file may have created it meanwhile.
      execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
      void err;
    }
  }
  return TEST_USER;
}

/** Lets the sshd login user write into a test directory. */
export function giveToUser(sshd: RunningSshd, path: string): void {
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', sshd.user, path]);
}

export async function startSshd(): Promise<RunningSshd> {
  if (!existsSync(SSHD)) throw new Error(`${SSHD} not found: install it with apt-get install openssh-server (scripts/setup.sh does)`);
  const dir = mkdtempSync(join(tmpdir(), 'airlock-sshd-'));
  chmodSync(dir, 0o755);
  // sshd insists on its privilege-separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  keygen(hostKey, 'airlock-test-host');
  const client = generateKey(dir, 'client_key');
  // Readable by the login user: sshd reads AuthorizedKeysFile with the user's privileges.
  writeFileSync(join(dir, 'authorized_keys'), client.publicLine + '\n', { mode: 0o644 });
  const port = await freePort();
  const user = ensureTestUser();
  const cfg = join(dir, 'sshd_config');
  writeFileSync(
    cfg,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      // Forwarding is allowed here on purpose: refusals in tests must come from Airlock.
      'AllowTcpForwarding yes',
      'AllowAgentForwarding yes',
      'X11Forwarding no',
      'PrintMotd no',
      'AcceptEnv LANG LC_* AIRLOCK_TEST_*',
      'Subsystem sftp internal-sftp',
      'LogLevel INFO',
      '',
    ].join('\n'),
  );
  let log = '';
  const proc = spawn(SSHD, ['-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  // Ready when it prints "Server listening on ...".
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    const check = () => {
      if (/Server listening on/.test(log)) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    proc.stderr.on('data', check);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ready) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`sshd did not start: ${log}`);
  }
  return {
    host: '127.0.0.1',
    port,
    user,
    dir,
    hostKeyFingerprint: fingerprintOf(hostKey),
    clientKeyPath: client.path,
    clientKey: client.key,
    log: () => log,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program to completion; stdin from `input`. */
export function run(cmd: string, args: string[], o: { env?: Record<string, string>; input?: string | Buffer; timeoutMs?: number } = {}): Promise<RunResult> & { pid?: number; kill(): void } {
  const p = spawn(cmd, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...o.env }, stdio: ['pipe', 'pipe', 'pipe'], detached: false });
  const out: Buffer[] = [];
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => out.push(d));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  p.stdin.on('error', () => undefined);
  if (o.input !== undefined) p.stdin.end(o.input);
  else p.stdin.end();
  const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 30_000);
  const done = new Promise<RunResult>((resolve, reject) => {
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr });
    });
  }) as Promise<RunResult> & { pid?: number; kill(): void };
  done.pid = p.pid;
  done.kill = () => p.kill('SIGTERM');
  return done;
}

/** Options for the real OpenSSH client talking to the gateway. */
export interface ClientAuth {
  /** The Airlock token, given as the password through SSH_ASKPASS. */
  token?: string;
  /** A private key file (public-key login). */
  keyPath?: string;
  /** How the token is sent; default: password, then keyboard-interactive. */
  method?: 'password' | 'keyboard-interactive';
}

/**
 * Common `ssh`/`scp` options: no user config, the gateway's host key pinned in a known_hosts
 * file, one password attempt, the token supplied by an askpass script.
 */
export function clientArgs(dir: string, knownHosts: string, auth: ClientAuth): { args: string[]; env: Record<string, string> } {
  const args = ['-F', '/dev/null', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'NumberOfPasswordPrompts=1', '-o', 'ConnectTimeout=10'];
  const env: Record<string, string> = {};
  if (auth.keyPath) {
    args.push('-o', 'PreferredAuthentications=publickey', '-o', 'IdentitiesOnly=yes', '-i', auth.keyPath);
  } else {
    args.push('-o', `PreferredAuthentications=${auth.method ?? 'password,keyboard-interactive'}`, '-o', 'PubkeyAuthentication=no');
    const askpass = join(dir, 'askpass.sh');
    if (!existsSync(askpass)) {
      writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$AIRLOCK_TEST_TOKEN"\n', { mode: 0o700 });
    }
    env.SSH_ASKPASS = askpass;
    env.SSH_ASKPASS_REQUIRE = 'force';
    env.DISPLAY = ':0';
    env.AIRLOCK_TEST_TOKEN = auth.token ?? '';
  }
  return { args, env };
}
