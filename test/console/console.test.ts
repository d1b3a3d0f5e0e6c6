// The auditor console in a real headless browser, over a store filled by real gateway traffic:
// psql through the PostgreSQL gateway (masked reads, a denied DROP, markup in statement text),
// then a token login, the sessions list and its filters, a timeline, the chain status; and an SSH
// shell with a pty through the real SSH gateway whose masked recording plays in asciinema-player.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { consoleOptions, startConsole, type RunningConsole } from '../../gateway/console/server.ts';
import { launchBrowser, type Browser } from '../support/browser.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { giveToUser } from '../support/sshd.ts';
import { startSshHarness, type SshHarness } from '../ssh/harness.ts';
import { ManualApprover } from '../support/manual-approver.ts';

const EMAIL = 'jane.doe@example.com';
const NAME = 'Jane Q. Secretname';
const MARKUP = '<img src=x onerror=alert(1)>';

async function login(page: Browser['page'], url: string, token: string): Promise<void> {
  await page.goto(url);
  await page.fill('#token', token);
  await page.click('#login-button');
  await page.waitForSelector('#nav:not([hidden])');
}

describe('console over PostgreSQL sessions', () => {
  let h: GatewayHarness;
  let con: RunningConsole;
  let browser: Browser;
  let auditorToken: string;
  let requestId: string;
  const approver = new ManualApprover('#dba');

  before(async () => {
    h = await startGateway({
      approver,
      setup: `CREATE TABLE customers (id int PRIMARY KEY, email text, name text);
              INSERT INTO customers VALUES (1, '${EMAIL}', '${NAME}');`,
      config: () => ({
        identities: [
          { name: 'alice', groups: ['dba'] },
          { name: 'agent-1', groups: ['agents'], owner: 'alice' },
          { name: 'audrey', groups: ['auditors'] },
        ],
        masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }, { column: 'public.customers.name', strategy: 'redact' }] },
        policy: {
          default: 'allow',
          rules: [
            { name: 'no-drop', match: { statements: ['DropStmt'] }, action: 'deny', reason: 'dropping tables is not allowed here' },
            { name: 'writes-need-a-dba', match: { statements: ['UpdateStmt'] }, action: 'review', reason: 'writes need a DBA', review: { approvers: ['dba'], timeout: '10m' } },
          ],
        },
      }),
    });
    const read = await h.psql('SELECT id, email, name FROM customers;\n', { user: 'agent-1' });
    assert.equal(read.code, 0, read.stderr);
    assert.ok(!read.stdout.includes(EMAIL), 'psql itself sees the email masked');
    const refused = await h.psql('DROP TABLE customers;\n', { user: 'agent-1' });
    assert.match(refused.stderr, /not allowed/);
    const other = await h.psql(`SELECT '${MARKUP}' AS x;\n`, { user: 'alice' });
    assert.equal(other.code, 0, other.stderr);
    // A held UPDATE, approved by bob in the approval channel (the worker audits the outcome).
    const held = h.psql("UPDATE customers SET name = name WHERE id = 1;\n", { user: 'agent-1' });
    const req = await approver.next();
    requestId = req.id;
    h.store.recordAudit({ at: new Date(), kind: 'approval.outcome', subject: req.id, actor: 'bob', detail: { outcome: 'approved', approvers: ['bob'] } });
    req.resolve({ outcome: 'approved', requestId: req.id, approvers: ['bob'], viaGrant: false });
    assert.match((await held).stdout, /UPDATE 1/);
    con = await startConsole(consoleOptions(h.loaded, h.store));
    auditorToken = await mintToken(tokenSettings(h.loaded), { name: 'audrey', groups: ['auditors'] });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await con?.close();
    await h?.close();
  });

  test('the API refuses requests without a token, with a bad token, and from outside the console groups', async () => {
    assert.equal((await fetch(con.url + 'api/sessions')).status, 401);
    assert.equal((await fetch(con.url + 'api/sessions', { headers: { authorization: 'Bearer not-a-token' } })).status, 401);
    const agent = await h.token('agent-1');
    assert.equal((await fetch(con.url + 'api/sessions', { headers: { authorization: `Bearer ${agent}` } })).status, 403);
    assert.equal((await fetch(con.url + 'api/sessions', { method: 'POST', headers: { authorization: `Bearer ${auditorToken}` } })).status, 405);
    const ok = await fetch(con.url + 'api/sessions', { headers: { authorization: `Bearer ${auditorToken}` } });
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  });

  test('a non-auditor token is refused at login in the browser', async () => {
    await browser.page.goto(con.url);
    await browser.page.fill('#token', await h.token('agent-1'));
    await browser.page.click('#login-button');
    // The login form stays; the refusal says why, and the token is not kept.
    await browser.page.waitForFunction(() => /not in a console group/.test(document.getElementById('login-error')?.textContent ?? ''));
    assert.equal(await browser.page.isVisible('#login'), true);
    assert.equal(await browser.page.isVisible('#nav'), false);
    assert.equal(await browser.page.evaluate(() => sessionStorage.length), 0);
  });

  test('an auditor logs in, filters sessions, opens a timeline; masked values stay masked and markup stays text', async () => {
    const { page } = browser;
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    await login(page, con.url, auditorToken);
    await page.waitForSelector('#sessions');
    assert.equal(await page.locator('.session-row').count(), 4);
    await page.waitForSelector('#chain-badge.ok');

    // Filter: only sessions with a denied operation.
    await page.selectOption('#filter-decision', 'deny');
    await page.click('#apply-filters');
    await page.waitForFunction(() => document.querySelectorAll('.session-row').length === 1);
    await page.selectOption('#filter-decision', '');
    await page.fill('#filter-identity', 'agent-1');
    await page.click('#apply-filters');
    await page.waitForFunction(() => document.querySelectorAll('.session-row').length === 3);
    await page.fill('#filter-identity', '');
    await page.fill('#filter-approval', requestId);
    await page.click('#apply-filters');
    await page.waitForFunction(() => document.querySelectorAll('.session-row').length === 1);
    await page.fill('#filter-approval', '');
    await page.fill('#filter-identity', 'nobody');
    await page.click('#apply-filters');
    await page.waitForSelector('#no-sessions');

    // The masked read's timeline.
    await page.fill('#filter-identity', 'agent-1');
    await page.selectOption('#filter-decision', 'mask');
    await page.click('#apply-filters');
    await page.waitForFunction(() => document.querySelectorAll('.session-row').length === 1);
    await page.click('.session-row');
    await page.waitForSelector('#timeline');
    const row = page.locator('tr.operation', { hasText: 'FROM customers' });
    // Allowed, with the masked columns named (the masking layer rewrote the rows).
    assert.equal(await row.locator('.decision').textContent(), 'allow');
    const masked = await row.locator('.masked-fields .masked').allTextContents();
    assert.ok(masked.some((m) => m.includes('customers.email')), masked.join(', '));
    assert.ok(masked.some((m) => m.includes('customers.name')), masked.join(', '));
    let html = await page.content();
    assert.ok(!html.includes(EMAIL) && !html.includes(NAME), 'no unmasked value in the DOM');

    // The denied DROP shows its rule and reason.
    await page.goto(con.url + '#/sessions?decision=deny');
    await page.waitForSelector('.session-row');
    await page.click('.session-row');
    const drop = page.locator('tr.operation', { hasText: 'DROP TABLE' });
    await drop.waitFor();
    assert.equal(await drop.locator('.decision').textContent(), 'deny');
    assert.match((await drop.textContent()) ?? '', /no-drop/);

    // Statement text with markup is shown as text, never parsed as HTML.
    await page.goto(con.url + '#/sessions?identity=alice');
    await page.waitForSelector('.session-row');
    await page.click('.session-row');
    await page.waitForSelector('#timeline');
    assert.equal(await page.locator('#timeline img').count(), 0);
    assert.ok((await page.locator('#timeline .op-text').allTextContents()).some((t) => t.includes('<img src=x')));
    html = await page.content();
    assert.ok(!html.includes(EMAIL) && !html.includes(NAME));

    // The approval request: listed with its history, linked to the held operation's timeline.
    await page.click('nav a[data-view="approvals"]');
    const card = page.locator(`#past .approval-request[data-request="${requestId}"]`);
    await card.waitFor();
    assert.match((await card.textContent()) ?? '', /approved[\s\S]*UPDATE customers[\s\S]*approval\.outcome[\s\S]*bob/);
    await card.locator('a').first().click();
    const update = page.locator('tr.operation', { hasText: 'UPDATE customers' });
    await update.waitFor();
    assert.equal(await update.locator('.decision').textContent(), 'review');
    assert.match((await update.textContent()) ?? '', new RegExp(`${requestId} approved by bob`));

    // The chain status view runs the verifier.
    await page.click('nav a[data-view="verify"]');
    await page.waitForSelector('#verify-status');
    assert.equal(await page.textContent('#verify-status'), 'VERIFIED');
    assert.deepEqual(dialogs, [], 'no script from the store ran');
  });
});

describe('console over an SSH shell recording', () => {
  let h: SshHarness;
  let con: RunningConsole;
  let browser: Browser;
  let work: string;

  before(async () => {
    h = await startSshHarness({
      default: 'allow',
      rules: [{ name: 'shell-masked', match: { protocols: ['ssh'], kinds: ['shell'] }, action: 'mask', mask: { detectors: [{ detector: 'email', strategy: 'redact' }] } }],
    });
    work = mkdtempSync(join(tmpdir(), 'airlock-console-work-'));
    giveToUser(h.sshd, work);
    const file = join(work, 'contacts.txt');
    writeFileSync(file, `contact ${EMAIL} today\n`);
    const r = await h.ssh('box', undefined, { extra: ['-tt'], input: `echo shell-$((6*7))\ncat ${file}\nexit 0\n`, timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.toString().includes(EMAIL), 'the client saw the email masked');
    con = await startConsole(consoleOptions(h.loaded, h.store));
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await con?.close();
    await h?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the shell recording plays in asciinema-player, masked', async () => {
    const { page } = browser;
    const token = await mintToken(tokenSettings(h.loaded), { name: 'audrey', groups: ['auditors'] });
    await login(page, con.url, token);
    await page.selectOption('#filter-protocol', 'ssh');
    await page.click('#apply-filters');
    await page.waitForSelector('.session-row');
    await page.click('.session-row');
    await page.waitForSelector('#timeline');
    // The recording is served only with the token, and only for an operation that has one.
    const detail = (await (await fetch(`${con.url}api/sessions/${encodeURIComponent(await page.textContent('#session-id') ?? '')}`, { headers: { authorization: `Bearer ${token}` } })).json()) as { recordings: number[] };
    assert.equal(detail.recordings.length, 1);
    const castUrl = `${con.url}api/sessions/${encodeURIComponent((await page.textContent('#session-id')) ?? '')}/recordings/${detail.recordings[0]}`;
    assert.equal((await fetch(castUrl)).status, 401);
    await page.click('button.play');
    // The player renders the terminal; wait until the shell's output has been played.
    await page.waitForFunction(() => /shell-42/.test(document.querySelector('.player')?.textContent ?? ''), undefined, { timeout: 30_000 });
    await page.waitForFunction(() => /\[redacted:email\]/.test(document.querySelector('.player')?.textContent ?? ''), undefined, { timeout: 30_000 });
    assert.ok(!(await page.content()).includes(EMAIL), 'the recording is masked as the client saw it');
  });
});
