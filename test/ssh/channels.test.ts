// Channel requests relayed through the gateway to a real sshd: env, window-change (and its
// asciicast "r" event), signals, exit-signal. The ssh2 client drives these precisely (the
// OpenSSH client only sends window changes on SIGWINCH of a real terminal).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import ssh2, { type ClientChannel, type Client as SshClient, type ExecOptions } from 'ssh2';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;

before(async () => {
  h = await startSshHarness({ default: 'allow', rules: [] });
});

after(async () => {
  await h?.close();
});

async function login(): Promise<SshClient> {
  const token = await h.token('alice');
  const c = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    c.once('ready', () => resolve());
    c.once('error', reject);
    c.connect({
      host: '127.0.0.1',
      port: h.gateway.port,
      username: 'box',
      password: token,
      hostVerifier: (key: Buffer) => `${h.gateway.hostPublicKey.split(' ')[0]} ${key.toString('base64')}` === h.gateway.hostPublicKey,
    });
  });
  return c;
}

interface Done {
  out: string;
  err: string;
  code: number | null;
  signal?: string;
}

/** Collects a channel's output; `live` shows what arrived so far. */
function collect(ch: ClientChannel): Promise<Done> & { live: Done } {
  const d: Done = { out: '', err: '', code: null };
  const p = new Promise<Done>((resolve) => {
    ch.on('data', (b: Buffer) => (d.out += b.toString()));
    ch.stderr.on('data', (b: Buffer) => (d.err += b.toString()));
    ch.on('exit', (code: number | null, signal?: string) => {
      d.code = code;
      if (signal) d.signal = signal;
    });
    ch.on('close', () => resolve(d));
  });
  return Object.assign(p, { live: d });
}

/** Opens an exec channel; output is collected from the callback on, so nothing is missed. */
function exec(c: SshClient, cmd: string, opts: ExecOptions = {}): Promise<{ ch: ClientChannel; done: ReturnType<typeof collect> }> {
  return new Promise((resolve, reject) => c.exec(cmd, opts, (err, ch) => (err ? reject(err) : resolve({ ch, done: collect(ch) }))));
}

test('environment variables the client sets reach the command (as far as sshd AcceptEnv allows)', async () => {
  const c = await login();
  try {
    const { ch, done } = await exec(c, 'echo "$AIRLOCK_TEST_COLOR"', { env: { AIRLOCK_TEST_COLOR: 'teal' } });
    ch.end();
    const d = await done;
    assert.equal(d.code, 0, d.err);
    assert.equal(d.out, 'teal\n');
  } finally {
    c.end();
  }
});

test('a command killed by a signal reports exit-signal, not a status', async () => {
  const c = await login();
  try {
    const { ch, done } = await exec(c, 'kill -TERM $$');
    ch.end();
    const d = await done;
    assert.equal(d.code, null);
    assert.equal(d.signal, 'SIGTERM');
    const op = h.store.getSession(h.store.listSessions({ limit: 1 })[0].id)?.operations.find((o) => o.text === 'kill -TERM $$');
    assert.equal(op?.classification.exitSignal, 'SIGTERM');
  } finally {
    c.end();
  }
});

test('signals from the client reach the remote process', async () => {
  const c = await login();
  try {
    const { ch, done } = await exec(c, 'trap "echo got-int; exit 7" INT; echo ready; while :; do sleep 0.1; done');
    for (let i = 0; i < 100 && !done.live.out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(done.live.out, /ready/);
    ch.signal('INT');
    const d = await done;
    assert.equal(d.code, 7, `${d.out} ${d.err}`);
    assert.match(d.out, /got-int/);
  } finally {
    c.end();
  }
});

test('window changes reach the remote pty and are recorded as asciicast resize events', async () => {
  const c = await login();
  try {
    const { ch, done } = await new Promise<{ ch: ClientChannel; done: ReturnType<typeof collect> }>((resolve, reject) =>
      c.shell({ rows: 24, cols: 80, term: 'xterm' }, (err, s) => (err ? reject(err) : resolve({ ch: s, done: collect(s) }))),
    );
    ch.write('stty size\n');
    await new Promise((r) => setTimeout(r, 300));
    ch.setWindow(40, 132, 0, 0);
    await new Promise((r) => setTimeout(r, 300));
    ch.write('stty size; exit 0\n');
    const d = await done;
    assert.equal(d.code, 0);
    assert.match(d.out, /24 80/);
    assert.match(d.out, /40 132/);
    const op = h.store.getSession(h.store.listSessions({ limit: 1 })[0].id)?.operations.find((o) => o.kind === 'shell');
    const cast = readFileSync(op?.classification.recording as string, 'utf8').trimEnd().split('\n');
    const header = JSON.parse(cast[0]) as { width: number; height: number; env: Record<string, string> };
    assert.equal(header.width, 80);
    assert.equal(header.height, 24);
    assert.equal(header.env.TERM, 'xterm');
    const events = cast.slice(1).map((l) => JSON.parse(l) as [number, string, string]);
    assert.ok(events.some(([, code, data]) => code === 'r' && data === '132x40'), 'resize event recorded');
    assert.ok(!events.some(([, code]) => code === 'i'), 'no input recorded unless a rule asks');
  } finally {
    c.end();
  }
});

test('unsupported subsystems are refused with exit 126', async () => {
  const c = await login();
  try {
    // Listen in the callback: the refusal can arrive in the same packet batch as the open.
    const done = await new Promise<Promise<Done>>((resolve, reject) => c.subsys('netconf', (err, s) => (err ? reject(err) : resolve(collect(s)))));
    const d = await done;
    assert.equal(d.code, 126);
    assert.match(d.err, /subsystem netconf is not supported/);
  } finally {
    c.end();
  }
});
