// The upstream request: the same target path and Host as http-proxy-3 (which this replaced) would
// send, the client's headers as parsed, and framing taken from the buffered body.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setupOutgoing } from 'http-proxy-3/dist/lib/http-proxy/common.js';
import { forwardHeaders, forwardTarget, sendUpstream, upstreamPath } from '../../gateway/http/forward.ts';

const agent = new http.Agent({ keepAlive: true });

test('target path and Host: what http-proxy-3 (changeOrigin) sent, for every upstream URL shape', () => {
  const targets = ['http://127.0.0.1:8080', 'http://127.0.0.1:8080/', 'http://api.internal/v1', 'http://api.internal/v1/', 'https://api.internal:8443/base/?tenant=a', 'http://[::1]:9000/x', 'https://example.com'];
  const rests = ['/', '/users', '/users/', '/a/b%20c/%C3%A9', "/it's/(x)*!$&+,=:@"];
  const queries = ['', 'a=1', 'a=1&b=two', 'q=%20x', 'q=a b', 'q="x"', "q='x'", 'q=<x>', 'q=é', 'q=a#frag', 'x=1?y=2', 'a=%zz', 'k[]=1&k[]=2', 'q={}|^`'];
  for (const t of targets) {
    const url = new URL(t);
    const ft = forwardTarget(url, agent);
    for (const rest of rests) {
      for (const q of queries) {
        const reqUrl = rest + (q ? `?${q}` : '');
        const theirs = setupOutgoing({} as never, { target: url, changeOrigin: true, agent }, { url: reqUrl, method: 'GET', headers: { host: 'airlock:8443' }, httpVersionMajor: 1 } as never) as { path: string; headers: Record<string, string>; port: number; hostname: string };
        assert.equal(upstreamPath(ft, rest, q), theirs.path, `${t} + ${reqUrl}`);
        assert.equal(ft.hostHeader, theirs.headers.host, `Host for ${t}`);
        assert.equal(ft.hostname, theirs.hostname, `hostname for ${t}`);
        assert.equal(ft.port, theirs.port || (url.protocol === 'https:' ? 443 : 80), `port for ${t}`);
      }
    }
  }
});

test('headers: the client’s as parsed, Airlock’s over them, own Host, trailer dropped, framing from the body', () => {
  const t = forwardTarget(new URL('http://up.internal:81/'), agent);
  const pairs = (a: Array<string | string[]>) => Array.from({ length: a.length / 2 }, (_, i) => [a[2 * i], a[2 * i + 1]]);
  const src = { host: 'airlock', accept: 'text/csv', 'transfer-encoding': 'chunked', trailer: 'x-sum', 'x-keep': 'k', cookie: 'a=1; b=2' };
  assert.deepEqual(pairs(forwardHeaders(src, { authorization: 'Bearer up', accept: 'application/json', 'impersonate-group': ['a', 'b'] }, t, 'POST', 5)), [
    ['x-keep', 'k'],
    ['cookie', 'a=1; b=2'],
    ['authorization', 'Bearer up'],
    ['accept', 'application/json'],
    ['impersonate-group', ['a', 'b']],
    ['host', 'up.internal:81'],
    ['content-length', '5'],
  ]);
  assert.deepEqual(pairs(forwardHeaders({ host: 'a' }, {}, t, 'GET', 0)), [['host', 'up.internal:81']], 'GET without a body: no framing');
  assert.deepEqual(pairs(forwardHeaders({ host: 'a', 'content-length': '0' }, {}, t, 'GET', 0)), [['host', 'up.internal:81'], ['content-length', '0']], 'the client framed it: framed again');
  assert.deepEqual(pairs(forwardHeaders({}, {}, t, 'DELETE', 0)), [['host', 'up.internal:81'], ['content-length', '0']], 'DELETE: content-length 0 (as http-proxy-3)');
});

test('hop-by-hop headers describe the client’s connection: Connection, what it names, Keep-Alive, TE and Upgrade stay behind', () => {
  const t = forwardTarget(new URL('http://up.internal/'), agent);
  const names = (a: Array<string | string[]>) => a.filter((_, i) => i % 2 === 0);
  const src = { connection: 'keep-alive, X-Airlock-Identity ,x-hop', 'keep-alive': 'timeout=5', te: 'trailers', upgrade: 'h2c', 'proxy-connection': 'close', 'x-hop': '1', 'x-end': '2' };
  assert.deepEqual(names(forwardHeaders(src, { 'x-airlock-identity': 'alice' }, t, 'GET', 0)), ['x-end', 'x-airlock-identity', 'host'], 'what Airlock adds is sent even when the client names it');
});

test('on the wire: the upstream reads exactly the buffered body, whatever framing the client used', async () => {
  const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
  const upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  try {
    const t = forwardTarget(new URL(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}/api`), agent);
    const send = (method: string, headers: http.IncomingHttpHeaders, body: string) =>
      new Promise<void>((resolve, reject) => {
        const b = Buffer.from(body);
        const r = sendUpstream(t, method, upstreamPath(t, '/things', 'a=1'), forwardHeaders(headers, { authorization: 'Bearer up' }, t, method, b.length), b);
        r.on('response', (res) => res.resume().on('end', resolve));
        r.on('error', reject);
      });
    await send('POST', { 'transfer-encoding': 'chunked', 'content-type': 'application/json' }, '{"a":1}');
    await send('GET', {}, '');
    await send('DELETE', {}, '');
    await send('PUT', { 'content-length': '999' }, 'xyz');
    assert.deepEqual(
      seen.map((s) => [s.method, s.url, s.headers['content-length'], s.headers['transfer-encoding'], s.headers.authorization, s.body]),
      [
        ['POST', '/api/things?a=1', '7', undefined, 'Bearer up', '{"a":1}'],
        ['GET', '/api/things?a=1', undefined, undefined, 'Bearer up', ''],
        ['DELETE', '/api/things?a=1', '0', undefined, 'Bearer up', ''],
        ['PUT', '/api/things?a=1', '3', undefined, 'Bearer up', 'xyz'],
      ],
    );
  } finally {
    agent.destroy();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  }
});
