// A local HTTPS server implementing the slice of the Kubernetes API that the tests drive with the
// real kubectl: discovery (/version, /api, /apis, /api/v1), namespaces, pods (list as Table or
// list, get, delete, watch), secrets (get, list), pod logs (follow) and exec over websocket
// (v5.channel.k8s.io / v4.channel.k8s.io; the command really runs, as a local process).
// Like the real one it honours Accept (JSON or YAML, the first it can produce; Table with
// `includeObject=Object` for pods), serves watches of secrets over a websocket as well, and answers
// a plain GET that asks for an upgrade as the plain GET it is.
// It authenticates like an API server: a bearer token or a client certificate signed by its CA,
// and records every request it saw (method, url, headers) so tests can check what Airlock sent.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { stringify as toYaml } from 'yaml';

export interface TestPki {
  dir: string;
  caFile: string;
  ca: string;
  /** Server certificate for 127.0.0.1/localhost, signed by the CA. */
  certFile: string;
  keyFile: string;
  /** A client certificate (CN=airlock) signed by the CA. */
  clientCertFile: string;
  clientKeyFile: string;
  cleanup(): void;
}

/** A throwaway CA with a server and a client certificate (openssl, EC P-256). */
export function makePki(cn = 'test'): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-pki-'));
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', `/CN=${cn}-ca`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  run('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=airlock/O=system:masters');
  run('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', 'client.ext');
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    clientCertFile: join(dir, 'client.crt'),
    clientKeyFile: join(dir, 'client.key'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** 'token' | 'cert' | 'none' */
  auth: string;
}

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid: string; creationTimestamp: string; resourceVersion: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

export interface FakeKube {
  url: string;
  port: number;
  pki: TestPki;
  token: string;
  seen: SeenRequest[];
  addPod(namespace: string, name: string): void;
  addSecret(namespace: string, name: string, data: Record<string, string>): void;
  /** Emits a watch event for every open pod watch in the namespace. */
  touchPod(namespace: string, name: string): void;
  hasPod(namespace: string, name: string): boolean;
  /** Open watch streams. */
  watching(): number;
  close(): Promise<void>;
}

let rv = 1000;
const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

function status(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) };
}

const RESOURCES = {
  kind: 'APIResourceList',
  apiVersion: 'v1',
  groupVersion: 'v1',
  resources: [
    { name: 'namespaces', singularName: 'namespace', namespaced: false, kind: 'Namespace', verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['ns'] },
    { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['po'], categories: ['all'] },
    { name: 'pods/exec', singularName: '', namespaced: true, kind: 'PodExecOptions', verbs: ['create', 'get'] },
    { name: 'pods/attach', singularName: '', namespaced: true, kind: 'PodAttachOptions', verbs: ['create', 'get'] },
    { name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
    { name: 'secrets', singularName: 'secret', namespaced: true, kind: 'Secret', verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] },
  ],
};

export async function startFakeKube(opts: { token?: string } = {}): Promise<FakeKube> {
  const pki = makePki('kube');
  const token = opts.token ?? `cluster-token-${Math.random().toString(36).slice(2)}`;
  const seen: SeenRequest[] = [];
  const namespaces = new Set(['default', 'kube-system', 'prod']);
  const pods = new Map<string, Obj>();
  const secrets = new Map<string, Obj>();
  const watchers = new Set<{ ns?: string; res: http.ServerResponse }>();

  const meta = (namespace: string | undefined, name: string) => ({
    name,
    ...(namespace ? { namespace } : {}),
    uid: `${name}-${rv}-uid`,
    creationTimestamp: now(),
    resourceVersion: String(++rv),
  });
  const pod = (ns: string, name: string): Obj => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: meta(ns, name),
    spec: { containers: [{ name: 'main', image: 'busybox:1.36' }], nodeName: 'node-1' },
    status: { phase: 'Running', podIP: '10.0.0.7', containerStatuses: [{ name: 'main', ready: true, restartCount: 0, image: 'busybox:1.36', imageID: '', state: { running: { startedAt: now() } } }], conditions: [{ type: 'Ready', status: 'True' }] },
  });

  function authOf(req: http.IncomingMessage): string {
    if (req.headers.authorization === `Bearer ${token}`) return 'token';
    const s = req.socket as TLSSocket;
    if (s.authorized && s.getPeerCertificate()?.subject?.CN === 'airlock') return 'cert';
    return 'none';
  }

  /** JSON, or YAML when the client's Accept lists YAML before JSON (protobuf is not spoken here). */
  function wantsYaml(accept: string): boolean {
    for (const part of accept.split(',')) {
      const t = part.trim().toLowerCase();
      if (t.startsWith('application/json') || t.startsWith('*/*')) return false;
      if (t.startsWith('application/yaml')) return true;
    }
    return false;
  }

  function send(res: http.ServerResponse, code: number, body: unknown, accept = ''): void {
    const yaml = wantsYaml(accept);
    const text = yaml ? toYaml(body) : JSON.stringify(body);
    res.writeHead(code, { 'content-type': yaml ? 'application/yaml' : 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  function podTable(items: Obj[], includeObject = 'Metadata') {
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: { resourceVersion: String(rv) },
      columnDefinitions: [
        { name: 'Name', type: 'string', format: 'name', description: 'Name', priority: 0 },
        { name: 'Ready', type: 'string', format: '', description: 'ready', priority: 0 },
        { name: 'Status', type: 'string', format: '', description: 'status', priority: 0 },
        { name: 'Restarts', type: 'string', format: '', description: 'restarts', priority: 0 },
        { name: 'Age', type: 'string', format: '', description: 'age', priority: 0 },
      ],
      rows: items.map((p) => ({
        cells: [p.metadata.name, '1/1', 'Running', '0', '5m'],
        object: includeObject === 'Object' ? p : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: p.metadata },
      })),
    };
  }

  function list(kind: string, items: Obj[]) {
    return { kind: `${kind}List`, apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items };
  }

  function filter(items: Obj[], query: URLSearchParams): Obj[] {
    const fs = query.get('fieldSelector');
    const m = fs ? /^metadata\.name=(.+)$/.exec(fs) : null;
    return m ? items.filter((i) => i.metadata.name === m[1]) : items;
  }

  const server = https.createServer({ cert: readFileSync(pki.certFile), key: readFileSync(pki.keyFile), ca: pki.ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const auth = authOf(req);
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, auth });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (auth === 'none') return send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      const u = new URL(req.url ?? '/', 'https://x');
      const p = u.pathname.split('/').filter(Boolean);
      const q = u.searchParams;
      const accept = String(req.headers.accept ?? '');
      const method = req.method ?? 'GET';
      if (u.pathname === '/version') return send(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-airlock-fake', platform: 'linux/amd64' });
      if (u.pathname === '/api') return send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] });
      if (u.pathname === '/apis') return send(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
      if (u.pathname === '/api/v1') return send(res, 200, RESOURCES);
      if (p[0] !== 'api' || p[1] !== 'v1') return send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
      let rest = p.slice(2);
      if (rest[0] === 'namespaces' && rest.length === 1) {
        return send(res, 200, list('Namespace', [...namespaces].map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: meta(undefined, n), status: { phase: 'Active' } }))));
      }
      let ns: string | undefined;
      if (rest[0] === 'namespaces') {
        ns = rest[1];
        rest = rest.slice(2);
        if (!namespaces.has(ns)) return send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' }));
      }
      const [resource, name, sub] = rest;
      if (resource === 'pods') {
        const all = [...pods.values()].filter((x) => ns === undefined || x.metadata.namespace === ns);
        if (!name && method === 'GET') {
          if (q.get('watch') === 'true' || q.get('watch') === '1') {
            res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
            res.flushHeaders();
            const w = { ns, res };
            watchers.add(w);
            res.on('close', () => watchers.delete(w));
            return;
          }
          const items = filter(all, q);
          return send(res, 200, accept.includes('as=Table') ? podTable(items, q.get('includeObject') ?? undefined) : list('Pod', items), accept);
        }
        const key = `${ns}/${name}`;
        const obj = pods.get(key);
        if (!obj) return send(res, 404, status(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
        if (sub === 'log') {
          res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
          res.write(`log line 1 from ${name} (paged ops@example.com)\n`);
          if (q.get('follow') !== 'true') return res.end();
          let n = 1;
          const t = setInterval(() => {
            res.write(`log line ${++n} from ${name}\n`);
            if (n >= 3) {
              clearInterval(t);
              res.end();
            }
          }, 300);
          res.on('close', () => clearInterval(t));
          return;
        }
        if (method === 'GET') return send(res, 200, accept.includes('as=Table') ? podTable([obj], q.get('includeObject') ?? undefined) : obj, accept);
        if (method === 'DELETE') {
          pods.delete(key);
          for (const w of watchers) if (w.ns === undefined || w.ns === ns) w.res.write(JSON.stringify({ type: 'DELETED', object: obj }) + '\n');
          return send(res, 200, obj);
        }
        return send(res, 405, status(405, 'MethodNotAllowed', `${method} not supported here`));
      }
      if (resource === 'secrets') {
        const all = [...secrets.values()].filter((x) => ns === undefined || x.metadata.namespace === ns);
        if (!name) return send(res, 200, list('Secret', filter(all, q)), accept);
        const obj = secrets.get(`${ns}/${name}`);
        if (!obj) return send(res, 404, status(404, 'NotFound', `secrets "${name}" not found`, { name, kind: 'secrets' }));
        return send(res, 200, obj, accept);
      }
      return send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    });
  });

  // exec over websocket: the remotecommand channel protocol, v5 (with the close-stdin signal) or v4.
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('v5.channel.k8s.io') ? 'v5.channel.k8s.io' : protocols.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false),
  });
  server.on('upgrade', (req: http.IncomingMessage, socket, head) => {
    const auth = authOf(req);
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, auth });
    const u = new URL(req.url ?? '/', 'https://x');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(u.pathname);
    const refuse = (code: number, body: unknown) => {
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${code} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
    };
    if (auth === 'none') return refuse(401, status(401, 'Unauthorized', 'Unauthorized'));
    const secretPath = /^\/api\/v1\/namespaces\/([^/]+)\/secrets(?:\/([^/]+))?$/.exec(u.pathname);
    if (secretPath && !secretPath[2] && u.searchParams.get('watch') === 'true') {
      // A watch over websocket: one JSON watch event per message (as the API server's websocket watch).
      const wsw = new WebSocketServer({ noServer: true, perMessageDeflate: false });
      wsw.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        for (const obj of secrets.values()) if (obj.metadata.namespace === secretPath[1]) ws.send(JSON.stringify({ type: 'ADDED', object: obj }));
        setTimeout(() => ws.close(1000), 200);
      });
      return;
    }
    if (secretPath && secretPath[2]) {
      // Not a streaming endpoint: the API server serves the GET as usual, upgrade headers or not.
      const obj = secrets.get(`${secretPath[1]}/${secretPath[2]}`);
      const text = JSON.stringify(obj ?? status(404, 'NotFound', 'not found'));
      socket.end(`HTTP/1.1 ${obj ? 200 : 404} OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
      return;
    }
    if (!m || !pods.has(`${m[1]}/${m[2]}`)) return refuse(404, status(404, 'NotFound', 'pod not found'));
    const command = u.searchParams.getAll('command');
    if (command.length === 0) return refuse(400, status(400, 'BadRequest', 'you must specify at least one command for the container'));
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const v5 = ws.protocol === 'v5.channel.k8s.io';
      const child = spawn(command[0], command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
      const frame = (ch: number, data: Buffer) => ws.send(Buffer.concat([Buffer.from([ch]), data]));
      child.stdout.on('data', (d: Buffer) => frame(1, d));
      child.stderr.on('data', (d: Buffer) => frame(2, d));
      child.stdin.on('error', () => undefined);
      ws.on('message', (data: Buffer) => {
        if (data[0] === 0) child.stdin.write(data.subarray(1));
        else if (v5 && data[0] === 255 && data[1] === 0) child.stdin.end();
      });
      if (u.searchParams.get('stdin') !== 'true') child.stdin.end();
      child.on('error', (e) => {
        frame(3, Buffer.from(JSON.stringify({ metadata: {}, status: 'Failure', message: e.message, reason: 'InternalError' })));
        ws.close(1000);
      });
      child.on('close', (code) => {
        const st = code === 0
          ? { metadata: {}, status: 'Success' }
          : { metadata: {}, status: 'Failure', message: `command terminated with non-zero exit code: exit status ${code}`, reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: String(code) }] } };
        frame(3, Buffer.from(JSON.stringify(st)));
        ws.close(1000);
      });
      ws.on('close', () => child.kill());
    });
  });

  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    pki,
    token,
    seen,
    addPod(ns, name) {
      pods.set(`${ns}/${name}`, pod(ns, name));
    },
    addSecret(ns, name, data) {
      secrets.set(`${ns}/${name}`, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { ...meta(ns, name) },
        type: 'Opaque',
        data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
      });
    },
    touchPod(ns, name) {
      const obj = pods.get(`${ns}/${name}`);
      if (!obj) return;
      obj.metadata.resourceVersion = String(++rv);
      for (const w of watchers) if (w.ns === undefined || w.ns === ns) w.res.write(JSON.stringify({ type: 'MODIFIED', object: obj }) + '\n');
    },
    hasPod(ns, name) {
      return pods.has(`${ns}/${name}`);
    },
    watching() {
      return watchers.size;
    },
    async close() {
      for (const w of watchers) w.res.destroy();
      for (const c of wss.clients) c.terminate();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      pki.cleanup();
    },
  };
}
