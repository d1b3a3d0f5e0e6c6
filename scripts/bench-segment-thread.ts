// bench-pg's `segment` target (a prototype, never a deployment): what the audit writer thread would
// cost if operation records were appended to a segment file instead of SQLite. Each batch the
// gateway hands over is turned into chain entries exactly as SqliteStore does (operationData, the
// canonical entry text, SHA-256 after the previous entry) and appended with one write per batch,
// as a group commit would; nothing else (no index, no projection, no fsync: SQLite runs with
// synchronous=NORMAL, which does not sync a WAL commit either).
import { closeSync, openSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { entryHash, entryText, GENESIS_HASH } from '../gateway/recording/chain.ts';
import { operationData } from '../gateway/recording/sqlite-store.ts';
import type { OperationRecord } from '../gateway/recording/store.ts';

const fd = openSync((workerData as { path: string }).path, 'a');
let seq = 0;
let head = GENESIS_HASH;
parentPort!.on('message', (batch: OperationRecord[] | 'close') => {
  if (batch === 'close') {
    closeSync(fd);
    parentPort!.close();
    return;
  }
  let out = '';
  for (const op of batch) {
    const data = operationData(op);
    const text = entryText(++seq, 'operation', data.at, data);
    head = entryHash(head, text);
    out += `${head} ${text}\n`;
  }
  writeSync(fd, out);
});
