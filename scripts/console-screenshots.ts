// Screenshots of the auditor console for the README, from real traffic: an embedded PostgreSQL
// behind the real gateway (masking, a deny rule), psql sessions of an agent and a human, then the
// console in headless chromium. Usage: node --import tsx scripts/console-screenshots.ts [OUT_DIR]
// Writes OUT_DIR/console.png (a session timeline; default OUT_DIR docs/) and sessions.png.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tokenSettings } from '../gateway/auth/settings.ts';
import { mintToken } from '../gateway/auth/tokens.ts';
import { consoleOptions, startConsole } from '../gateway/console/server.ts';
import { launchBrowser } from '../test/support/browser.ts';
import { startGateway } from '../test/support/gateway.ts';

const out = resolve(process.argv[2] ?? 'docs');
mkdirSync(out, { recursive: true });

const h = await startGateway({
  setup: `CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, card_number text, city text);
          INSERT INTO customers VALUES (1, 'Jane Doe', 'jane.doe@example.com', '4111111111111111', 'Oslo'),
                                       (2, 'Ravi Patel', 'ravi@example.org', '5555555555554444', 'Lyon');`,
  config: () => ({
    identities: [
      { name: 'alice', groups: ['dba'] },
      { name: 'agent-1', groups: ['agents'], owner: 'alice' },
      { name: 'audrey', groups: ['auditors'] },
    ],
    masking: {
      hashKey: { file: 'hash.key' },
      columns: [
        { column: 'public.customers.email', strategy: 'hash' },
        { column: 'public.customers.card_number', strategy: 'partial' },
        { column: 'public.customers.full_name', strategy: 'redact' },
      ],
    },
    policy: {
      default: 'allow',
      rules: [
        { name: 'block-destructive-ddl', match: { statements: ['DropStmt', 'TruncateStmt'] }, action: 'deny', reason: 'dropping or truncating tables is not allowed' },
      ],
    },
  }),
});
const browser = await launchBrowser({ width: 1180, height: 640 });
let con: Awaited<ReturnType<typeof startConsole>> | undefined;
try {
  await h.psql('SELECT id, full_name, email, card_number FROM customers ORDER BY id;\nSELECT city, count(*) FROM customers GROUP BY city;\nDROP TABLE customers;\nSELECT count(*) FROM customers;\n', { user: 'agent-1' });
  await h.psql("UPDATE customers SET city = 'Bergen' WHERE id = 1;\n", { user: 'alice' });
  con = await startConsole(consoleOptions(h.loaded, h.store));
  const token = await mintToken(tokenSettings(h.loaded), { name: 'audrey', groups: ['auditors'] });
  const { page } = browser;
  await page.goto(con.url);
  await page.fill('#token', token);
  await page.click('#login-button');
  await page.waitForSelector('#sessions');
  await page.waitForSelector('#chain-badge.ok');
  await page.screenshot({ path: join(out, 'sessions.png') });
  await page.fill('#filter-identity', 'agent-1');
  await page.click('#apply-filters');
  await page.waitForFunction(() => document.querySelectorAll('.session-row').length === 1);
  await page.click('.session-row');
  await page.waitForSelector('#timeline');
  await page.waitForSelector('#chain-badge.ok');
  await page.screenshot({ path: join(out, 'console.png') });
  process.stdout.write(`wrote ${join(out, 'console.png')} and ${join(out, 'sessions.png')}\n`);
} finally {
  await browser.close();
  await con?.close();
  await h.close();
}
