// Channel requests refused before any policy decision: environment variables a target does not
// allow, and the legacy scp protocol (`scp -t` / `scp -f`, i.e. `scp -O`), whose paths the
// remote login shell expands, so they cannot be decided like SFTP paths.
import type { SshTargetConfig } from '../config/schema.ts';
import { globToRegExp } from '../policy/match.ts';

/** Whether a client may set `name` on this target (`ssh.targets[].allowEnv`, `*` globs). */
export function envAllowed(target: Pick<SshTargetConfig, 'allowEnv'>, name: string): boolean {
  return (target.allowEnv ?? []).some((p) => globToRegExp(p, false).test(name));
}

/** A refusal message when the command line is a legacy scp transfer; undefined otherwise. */
export function legacyScp(command: string): string | undefined {
  const words = command.trim().split(/\s+/);
  let i = 0;
  // scp run through a wrapper (`sudo scp -t`) is still a legacy transfer.
  while (i < words.length && /^(sudo|nice|nohup|timeout|ionice|stdbuf|env|command|exec)$/.test(words[i].replace(/^.*\//, ''))) i++;
  if (i >= words.length || words[i].replace(/^.*\//, '').replace(/^['"]|['"]$/g, '') !== 'scp') return undefined;
  if (!words.slice(i + 1).some((w) => /^-[A-Za-z0-9]*[tf]/.test(w.replace(/^['"]/, '')))) return undefined;
  return 'the legacy scp protocol (scp -O, remote scp -t/-f) is not supported through Airlock: its paths are expanded by the remote shell, so they cannot be checked; use scp without -O (it speaks SFTP) or sftp';
}
