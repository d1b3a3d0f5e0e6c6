import { loadModule, parseSync, parsePlPgSQLSync } from 'libpg-query';
await loadModule();
const qs = process.argv.slice(2);
for (const q of qs) {
  try { console.log(q, '\n ', JSON.stringify(parseSync(q).stmts.map(s=>s.stmt))); } catch (e) { console.log('ERR', e.message); }
}
