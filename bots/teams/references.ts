// Where the bot may post proactively: the team channels it was installed in. Teams tells the bot
// once (a conversationUpdate whose membersAdded contains the bot), with the serviceUrl of the
// tenant's region; that is kept in a small JSON file shared by the bot app (writer) and the
// workers (readers). Written atomically (temp file + rename) so a reader never sees half a file.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface InstalledChannel {
  /** Channel conversation id (19:…@thread.tacv2), without any `;messageid=`. */
  conversationId: string;
  serviceUrl: string;
  tenantId?: string;
  teamId?: string;
  teamName?: string;
  channelName?: string;
  installedAt: string;
}

interface FileShape {
  version: 1;
  channels: InstalledChannel[];
}

export class ConversationReferenceStore {
  constructor(readonly file: string) {}

  list(): InstalledChannel[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new Error(`cannot read the Teams installation store ${this.file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    let data: Partial<FileShape>;
    try {
      data = JSON.parse(text) as Partial<FileShape>;
    } catch {
      // Never overwritten automatically: it may be the only record of where the bot lives.
      throw new Error(`the Teams installation store ${this.file} is not valid JSON: fix or remove it (reinstalling the bot recreates it)`);
    }
    return Array.isArray(data.channels) ? data.channels.filter((c) => typeof c?.conversationId === 'string' && typeof c.serviceUrl === 'string') : [];
  }

  find(conversationId: string): InstalledChannel | undefined {
    const bare = channelOf(conversationId);
    return this.list().find((c) => c.conversationId === bare);
  }

  /** The most recent installation: where requests go when no channel is configured. */
  latest(): InstalledChannel | undefined {
    return this.list().sort((a, b) => b.installedAt.localeCompare(a.installedAt))[0];
  }

  upsert(ch: InstalledChannel): void {
    const rest = this.list().filter((c) => c.conversationId !== ch.conversationId);
    this.write([...rest, { ...ch, conversationId: channelOf(ch.conversationId) }]);
  }

  remove(conversationId: string): boolean {
    const all = this.list();
    const rest = all.filter((c) => c.conversationId !== channelOf(conversationId));
    if (rest.length === all.length) return false;
    this.write(rest);
    return true;
  }

  private write(channels: InstalledChannel[]): void {
    mkdirSync(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ version: 1, channels } satisfies FileShape, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

/** `19:abc@thread.tacv2;messageid=123` -> `19:abc@thread.tacv2` (a thread's channel). */
export function channelOf(conversationId: string): string {
  const i = conversationId.indexOf(';messageid=');
  return i === -1 ? conversationId : conversationId.slice(0, i);
}
