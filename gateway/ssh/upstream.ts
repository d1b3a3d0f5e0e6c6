// The upstream side: one ssh2 Client per gateway connection, logged in with the target's own
// key or password, after strict host-key checking against the configured fingerprints.
import { createHash } from 'node:crypto';
import ssh2, { type Client } from 'ssh2';

// ssh2 is CommonJS; its named exports are not visible to ESM static analysis.
const { Client: SshClient, utils } = ssh2;

export interface UpstreamTarget {
  name: string;
  host: string;
  port: number;
  user: string;
  privateKey?: string;
  password?: string;
  hostKeyFingerprints: string[];
}

export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly reason: 'host-key' | 'auth' | 'network' | 'timeout',
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

/** OpenSSH's SHA256 fingerprint of a public key blob: `SHA256:` + unpadded base64. */
export function fingerprintOfBlob(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Fingerprint and `authorized_keys`-style line of a private or public key (PEM or OpenSSH). */
export function describeKey(key: string | Buffer): { fingerprint: string; publicLine: string; type: string } {
  const parsed = utils.parseKey(key);
  if (parsed instanceof Error) throw new Error(`cannot parse key: ${parsed.message}`);
  const k = Array.isArray(parsed) ? (parsed[0] as typeof parsed) : parsed;
  const blob = k.getPublicSSH();
  return { fingerprint: fingerprintOfBlob(blob), publicLine: `${k.type} ${blob.toString('base64')}`, type: k.type };
}

const normalizeFp = (fp: string) => fp.trim().replace(/=+$/, '');

export function connectUpstream(t: UpstreamTarget, timeoutMs = 10_000): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new SshClient();
    const expected = new Set(t.hostKeyFingerprints.map(normalizeFp));
    let presented: string | undefined;
    let settled = false;
    const fail = (e: UpstreamError) => {
      if (settled) return;
      settled = true;
      client.removeAllListeners('ready');
      client.on('error', () => {});
      client.end();
      reject(e);
    };
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      resolve(client);
    });
    client.on('error', (err: Error & { level?: string }) => {
      if (presented && !expected.has(presented)) {
        return fail(
          new UpstreamError(
            `upstream host key mismatch for target ${t.name} (${t.host}:${t.port}): it presented ${presented}, but the configured fingerprints are ${[...expected].join(', ')}. ` +
              'Refusing to connect (possible man-in-the-middle, or the host was rebuilt: verify it, then update ssh.targets[].hostKeyFingerprints).',
            'host-key',
          ),
        );
      }
      if (err.level === 'client-authentication') return fail(new UpstreamError(`Airlock's credentials for target ${t.name} were refused by ${t.host}:${t.port}`, 'auth'));
      if (err.level === 'client-timeout') return fail(new UpstreamError(`target ${t.name} (${t.host}:${t.port}) did not answer within ${timeoutMs / 1000}s`, 'timeout'));
      fail(new UpstreamError(`cannot reach target ${t.name} (${t.host}:${t.port}): ${err.message}`, 'network'));
    });
    client.connect({
      host: t.host,
      port: t.port,
      username: t.user,
      ...(t.privateKey ? { privateKey: t.privateKey } : {}),
      ...(t.password ? { password: t.password } : {}),
      readyTimeout: timeoutMs,
      keepaliveInterval: 30_000,
      hostVerifier: (key: Buffer) => {
        presented = fingerprintOfBlob(key);
        return expected.has(presented);
      },
    });
  });
}
