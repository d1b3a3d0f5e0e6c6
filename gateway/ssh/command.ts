// A best-effort shell-quote parse of an SSH exec command line, for the audit log and the
// approver: the argv of every simple command in it (split at |, &&, ;, ...) and the programs they
// seem to run, looking through wrappers and into `sh -c '...'`. It is NOT what policy decides on:
// a real shell can run something else (see command-class.ts, which decides simple vs complex;
// complex lines are kind exec-complex, whose programs rules treat as unknown). It also rejects
// unbalanced quotes (CommandParseError), which the gateway denies as unparseable.
import { parse, type ParseEntry } from 'shell-quote';

export interface CommandFacts {
  /** Each simple command's words, quotes removed, `$VAR` kept literal. */
  commands: string[][];
  /** Basenames of the programs run, in order, deduplicated (`rm`, `curl`, `sh`, `pg_dump`). */
  programs: string[];
  /** Shell operators used (`|`, `&&`, `>`, `$(` ...); tells a pipeline from a single command. */
  operators: string[];
}

export class CommandParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandParseError';
  }
}

/** Wrappers whose first non-option argument is the program they run. */
const WRAPPERS = new Set(['sudo', 'doas', 'env', 'nohup', 'nice', 'ionice', 'time', 'timeout', 'xargs', 'exec', 'command', 'builtin', 'stdbuf', 'chroot', 'setsid', 'runuser', 'su', 'watch', 'strace', 'flock']);
/** Wrapper options that take a value (so the value is not mistaken for the program). */
const WRAPPER_VALUE_OPTS = new Set(['-u', '-g', '-n', '-c', '-s', '-I', '-P', '-L', '-d', '-E', '-k', '-o', '-e', '-i', '--user', '--group', '-C', '-h', '-p', '-r', '-t']);
const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'ash', 'busybox']);
const MAX_DEPTH = 4;

/** Unbalanced quotes: shell-quote accepts them silently, a real shell refuses; we refuse too. */
function checkQuotes(line: string): void {
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
    } else if (c === '\\') {
      i++;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
    } else if (c === '"' || c === "'") {
      quote = c;
    }
  }
  if (quote) throw new CommandParseError(`unterminated ${quote === '"' ? 'double' : 'single'} quote`);
}

function basename(word: string): string {
  const i = word.lastIndexOf('/');
  return i >= 0 ? word.slice(i + 1) : word;
}

/** The program a simple command runs, looking through wrappers; plus an inner `-c` script. */
function programsOf(words: string[]): { programs: string[]; scripts: string[] } {
  const programs: string[] = [];
  const scripts: string[] = [];
  let i = 0;
  // Leading variable assignments: FOO=bar cmd
  while (i < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i])) i++;
  while (i < words.length) {
    const prog = basename(words[i]);
    programs.push(prog);
    if (SHELLS.has(prog)) {
      const c = words.indexOf('-c', i + 1);
      if (c >= 0 && c + 1 < words.length) scripts.push(words[c + 1]);
      // `bash -lc 'x'` style combined flags
      for (let j = i + 1; j < words.length - 1; j++) if (/^-[A-Za-z]*c[A-Za-z]*$/.test(words[j]) && words[j] !== '-c') scripts.push(words[j + 1]);
      break;
    }
    if (!WRAPPERS.has(prog)) break;
    i++;
    while (i < words.length && (words[i].startsWith('-') || /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]) || (prog === 'timeout' && /^\d/.test(words[i])))) {
      if (WRAPPER_VALUE_OPTS.has(words[i]) && prog !== 'env') i++;
      i++;
    }
  }
  return { programs, scripts };
}

function collect(line: string, depth: number, out: CommandFacts): void {
  checkQuotes(line);
  let entries: ParseEntry[];
  try {
    entries = parse(line, (key: string) => `$${key}`);
  } catch (err) {
    throw new CommandParseError((err as Error).message);
  }
  let current: string[] = [];
  const flush = () => {
    if (current.length === 0) return;
    out.commands.push(current);
    const { programs, scripts } = programsOf(current);
    for (const p of programs) if (!out.programs.includes(p)) out.programs.push(p);
    if (depth < MAX_DEPTH) for (const s of scripts) collect(s, depth + 1, out);
    current = [];
  };
  let afterRedirect = false;
  for (const e of entries) {
    if (typeof e === 'string') {
      // The target of a redirection (`> file`) is not an argument of the command.
      if (afterRedirect) {
        afterRedirect = false;
        out.commands.push(['>', e]);
        continue;
      }
      current.push(e);
    } else if ('comment' in e) {
    } else if ('op' in e) {
      if (e.op === 'glob') {
        current.push((e as { pattern: string }).pattern);
        continue;
      }
      if (!out.operators.includes(e.op)) out.operators.push(e.op);
      if (e.op === '>' || e.op === '>>' || e.op === '<' || e.op === '>&' || e.op === '<(' || e.op === '>(') {
        afterRedirect = e.op !== '<(' && e.op !== '>(';
        if (!afterRedirect) flush();
        continue;
      }
      // |, ||, &&, ;, &, (, ), $( ... all start a new simple command.
      flush();
    }
  }
  flush();
}

/** Parses a command line. Throws CommandParseError for text a shell would refuse (unbalanced quotes). */
export function parseCommand(line: string): CommandFacts {
  const out: CommandFacts = { commands: [], programs: [], operators: [] };
  collect(line, 0, out);
  return out;
}
