// Path normalization: what rules are decided on is what is forwarded; anything ambiguous is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeAnyPath, normalizePath, splitTarget } from '../../gateway/http/normalize.ts';

test('plain paths pass unchanged; repeated slashes collapse; unreserved escapes are decoded', () => {
  assert.deepEqual(normalizePath('/api/v1/users'), { ok: true, path: '/api/v1/users', encoded: '/api/v1/users' });
  assert.deepEqual(normalizePath('//api///v1//users/'), { ok: true, path: '/api/v1/users/', encoded: '/api/v1/users/' });
  assert.deepEqual(normalizePath('/%61dmin/%7Euser'), { ok: true, path: '/admin/~user', encoded: '/admin/~user' });
  assert.deepEqual(normalizePath('/'), { ok: true, path: '/', encoded: '/' });
});

test('non-ASCII and spaces are decoded for rules and re-encoded canonically for the upstream', () => {
  assert.deepEqual(normalizePath('/files/caf%C3%A9%20menu'), { ok: true, path: '/files/café menu', encoded: '/files/caf%C3%A9%20menu' });
  assert.deepEqual(normalizePath('/files/café'), { ok: true, path: '/files/café', encoded: '/files/caf%C3%A9' });
});

test('dot segments, double encoding, encoded separators, backslashes, path parameters and junk are refused', () => {
  for (const p of ['/a/../b', '/a/./b', '/a/%2e%2e/b', '/a/%2E./b', '/a/.%2e', '/a/%252e%252e/b', '/a%2fb', '/a%5cb', '/a\\b', '/a;jsessionid=1/b', '/a/%00', '/a/%zz', '/a/%c3%28', 'relative', '/a/%0d%0aX: y']) {
    const r = normalizePath(p);
    assert.equal(r.ok, false, p);
  }
});

test('splitTarget separates the raw query', () => {
  assert.deepEqual(splitTarget('/a/b?x=1&y=%2F'), { path: '/a/b', query: 'x=1&y=%2F' });
  assert.deepEqual(splitTarget('/a'), { path: '/a', query: '' });
});

test('the fast path for canonical paths answers exactly what the general normalization does', () => {
  const alphabet = ['a', 'Z', '0', '.', '..', '-', '_', '~', '!', '$', '&', "'", '(', ')', '*', '+', ',', '=', ':', '@', ';', '%41', '%2e', '%2F', ' ', 'é', '\\', '?', '#', '"', '/', '//'];
  let n = 0;
  for (const a of alphabet) {
    for (const b of alphabet) {
      for (const shape of [`/${a}`, `/${a}/${b}`, `/${a}${b}/`, `/x/${a}/${b}/y`, `/${a}${b}`, `/.${a}`, `/${a}.`]) {
        assert.deepEqual(normalizePath(shape), normalizeAnyPath(shape), shape);
        n++;
      }
    }
  }
  assert.ok(n > 7000);
});
