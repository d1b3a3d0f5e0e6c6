// Shared setup for the Kubernetes end-to-end tests: a fake API server, the Airlock HTTP gateway
// (TLS) in front of it, kubeconfigs minted for agents, and the real kubectl.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Approver } from '../../gateway/approvals/approver.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { kubeconfigFor } from '../../gateway/kubernetes/kubeconfig.ts';
import type { Identity } from '../../gateway/policy/operation.ts';
import type { Store } from '../../gateway/recording/store.ts';
import { makePki, startFakeKube, type FakeKube, type TestPki } from '../support/fake-kube-apiserver.ts';

export interface KubeHarness {
  kube: FakeKube;
  gw: HttpGateway;
  loaded: LoadedConfig;
  dir: string;
  gwPki: TestPki;
  token(identity: Identity, ttlMs?: number): Promise<string>;
  /** Writes a kubeconfig for `connection` with `token` and returns its path. */
  kubeconfig(connection: string, token: string): string;
  kubectl(kubeconfig: string, args: string[], opts?: { stdin?: string; timeoutMs?: number }): Promise<{ code: number | null; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function startKubeHarness(o: { yaml: (kube: FakeKube, dir: string) => string; store: Store; approver: Approver }): Promise<KubeHarness> {
  const kube = await startFakeKube();
  const dir = mkdtempSync(join(tmpdir(), 'airlock-k8s-'));
  const gwPki = makePki('airlock-gw');
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(dir, 'cluster.token'), kube.token);
  const loaded = parseConfig(o.yaml(kube, dir).replaceAll('GW_CERT', gwPki.certFile).replaceAll('GW_KEY', gwPki.keyFile), join(dir, 'airlock.yaml'), dir);
  const gw = await startHttpGateway({ loaded, store: o.store, approver: o.approver, host: '127.0.0.1', port: 0 });
  let n = 0;
  return {
    kube,
    gw,
    loaded,
    dir,
    gwPki,
    token: (identity, ttlMs) => mintToken(tokenSettings(loaded), identity, ttlMs),
    kubeconfig(connection, token) {
      const file = join(dir, `kubeconfig-${++n}`);
      writeFileSync(file, kubeconfigFor(loaded, connection, token, gw.url));
      return file;
    },
    kubectl(kubeconfig, args, opts = {}) {
      return new Promise((resolve) => {
        const child = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'true' },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        if (opts.stdin !== undefined) child.stdin.end(opts.stdin);
        else child.stdin.end();
        const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
        child.on('close', (code) => {
          clearTimeout(t);
          resolve({ code, stdout, stderr });
        });
      });
    },
    async close() {
      await gw.close();
      await kube.close();
      gwPki.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
