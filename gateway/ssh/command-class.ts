// Decides whether an SSH exec command line is SIMPLE (a plain argv Airlock can police by program
// and arguments) or COMPLEX (anything a shell would interpret: Airlock cannot know what runs).
//
// The remote side hands the line to the login shell (`$SHELL -c LINE`), and a shell language
// cannot be policed by parsing: expansions, quoting rules and built-ins differ between bash,
// dash, zsh, fish and csh, and every interpreter or wrapper can run anything. So this is an
// allowlist of syntax, not a denylist of tricks: a word may only contain characters that mean
// the same thing to every shell, unquoted or inside quotes without expansions; everything else
// (and every program that runs other programs) makes the line complex.
//
// Wrappers that run exactly one other command with a small set of known options (sudo -u,
// nice -n, timeout, nohup, ionice, stdbuf) are unwrapped; any other option makes the line complex.

export interface SimpleCommand {
  simple: true;
  /** The words, quotes removed. */
  argv: string[];
  /** Basenames of the programs run: the wrappers, then the program they run (`sudo`, `pg_dump`). */
  programs: string[];
}

export interface ComplexCommand {
  simple: false;
  /** Why the line is complex (for the audit log and the refusal message). */
  reason: string;
}

export type CommandClass = SimpleCommand | ComplexCommand;

/** Characters allowed unquoted: they mean nothing special to sh, bash, dash, zsh, ksh, fish or csh. */
const PLAIN = /^[A-Za-z0-9_\-./:=,+@%]$/;

/**
 * Programs that interpret their arguments or input as code, or run other commands, editors and
 * pagers with a shell escape, schedulers and remote hops. Running one makes the line complex.
 */
export const CODE_RUNNERS = new Set([
  // shells and shell built-ins / keywords that run or change what runs
  'sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'csh', 'tcsh', 'fish', 'rbash', 'busybox', 'toybox',
  'yash', 'posh', 'oksh', 'loksh', 'lksh', 'pdksh', 'elvish', 'nu', 'xonsh', 'rc', 'es', 'osh', 'ysh', 'gsed', 'nvi',
  'eval', 'exec', 'command', 'builtin', 'source', '.', 'time', 'trap', 'alias', 'function', 'coproc', 'select',
  'if', 'then', 'else', 'elif', 'fi', 'for', 'while', 'until', 'do', 'done', 'case', 'esac', 'declare', 'typeset',
  'export', 'readonly', 'local', 'set', 'shopt', 'enable', 'hash', 'type', 'unset', 'fc', 'history', 'let',
  'mapfile', 'readarray', 'compgen', 'complete', 'bind', // -C/-x callbacks are evaluated
  // zsh, csh and fish built-ins and precommand modifiers that run what follows
  'noglob', 'nocorrect', 'repeat', 'foreach', 'emulate', 'zmodload', 'autoload', 'sched', 'zpty', 'zargs', 'onintr',
  'not', 'and', 'or', 'begin', 'end', 'switch', 'emit',
  // interpreters
  'python', 'python2', 'python3', 'pypy', 'pypy3', 'perl', 'ruby', 'irb', 'node', 'nodejs', 'deno', 'bun', 'php',
  'lua', 'luajit', 'tclsh', 'wish', 'expect', 'awk', 'gawk', 'mawk', 'nawk', 'sed', 'ed', 'ex', 'jjs',
  'java', 'jshell', 'groovy', 'scala', 'R', 'Rscript', 'julia', 'gdb', 'lldb', 'make', 'gmake', 'cmake', 'bc', 'dc',
  'osascript', 'pwsh', 'powershell', 'erl', 'escript', 'elixir', 'iex', 'guile', 'sbcl', 'clisp', 'racket', 'ghci',
  'sqlite3', 'mysql', 'psql', 'redis-cli', 'mongo', 'mongosh',
  // wrappers that run another command (not unwrapped: their option languages are too large)
  'env', 'xargs', 'parallel', 'doas', 'su', 'runuser', 'sg', 'newgrp', 'pkexec', 'chroot', 'setsid', 'flock',
  'watch', 'strace', 'ltrace', 'nsenter', 'unshare', 'capsh', 'setpriv', 'taskset', 'chrt', 'prlimit', 'cgexec',
  'systemd-run', 'script', 'unbuffer', 'dtach', 'screen', 'tmux', 'at', 'batch', 'crontab', 'firejail', 'bwrap',
  'proot', 'fakeroot', 'faketime', 'numactl', 'cpulimit', 'daemonize', 'start-stop-daemon', 'run-parts', 'logsave',
  'sshpass', 'rlwrap', 'ssh-agent', 'ssh-copy-id', 'dbus-launch', 'dbus-run-session', 'xvfb-run', 'setarch', 'linux32', 'linux64',
  'valgrind', 'perf', 'catchsegv', 'nocache', 'eatmydata', 'torsocks', 'proxychains', 'proxychains4', 'chpst',
  'setuidgid', 'softlimit', 'envdir', 'envuidgid', 'tini', 'dumb-init', 'gosu', 'su-exec', 'lxc-attach', 'machinectl',
  'systemd-nspawn', 'ip', 'flatpak', 'snap', 'sudoedit', 'visudo', 'vipw', 'vigr', 'editor', 'sensible-editor',
  'sensible-pager', 'xdg-open', 'entr', 'inotifywait',
  // remote hops and programs with a command option or shell escape
  // sftp-server over an exec channel would be SFTP without the gateway's path decisions.
  'sftp-server', 'ssh', 'scp', 'rsync', 'sftp', 'telnet', 'nc', 'ncat', 'netcat', 'socat', 'ftp', 'docker', 'podman', 'kubectl',
  'vi', 'vim', 'nvim', 'view', 'vimdiff', 'emacs', 'nano', 'pico', 'joe', 'mc', 'less', 'more', 'most', 'man', 'pager',
  'git', 'tar', 'zip', 'mutt', 'mail', 'openssl', 'dpkg', 'apt', 'apt-get', 'rpm', 'yum', 'dnf', 'pip', 'pip3',
  'npm', 'npx', 'yarn', 'gem', 'cargo', 'go', 'ansible', 'terraform', 'puppet', 'salt', 'journalctl', 'systemctl',
]);

/**
 * Names that are shell keywords or short words only as a whole program name: a version or variant
 * suffix does not make them programs (`do-release-upgrade` is not `do`).
 */
const WHOLE_NAME_ONLY = new Set([
  'if', 'then', 'else', 'elif', 'fi', 'for', 'while', 'until', 'do', 'done', 'case', 'esac', 'not', 'and', 'or', 'begin',
  'end', 'switch', 'select', 'function', 'time', 'set', 'let', 'type', 'hash', 'local', 'export', 'at', 'bind', 'history',
  'view', 'more', 'mail', 'watch', 'script', 'batch', 'ed', 'ex', 'ip', 'sg', 'su', 'R', 'es', 'rc', 'nu', 'emit', 'repeat',
  // The OpenSSH tools (ssh-keyscan, ssh-keygen, ssh-add) run nothing; the ones that do are listed by name.
  'ssh',
]);

/**
 * The code runner a program name stands for, if any. Installed interpreters carry version and
 * variant suffixes and target prefixes (`perl5.36-x86_64-linux-gnu`, `ksh93`, `tclsh8.6`,
 * `vim.tiny`, `sh.distrib`, `x86_64-linux-gnu-python3.11`), so each `-`/`_`/`.` part of the name
 * is read up to its first digit.
 */
export function codeRunnerOf(prog: string): string | undefined {
  if (CODE_RUNNERS.has(prog)) return prog;
  for (const part of prog.split(/[-_.]/)) {
    const m = /^[A-Za-z]+/.exec(part);
    if (m && CODE_RUNNERS.has(m[0]) && !WHOLE_NAME_ONLY.has(m[0])) return m[0];
  }
  return undefined;
}

/** find actions that run or delete or write; without them find only lists. */
const FIND_ACTIONS = /^-(exec|execdir|ok|okdir|delete|fprint|fprint0|fprintf|fls)$/;

/** Splits a line into words; `null` when it holds anything but plain words and plain quotes. */
export function plainWords(line: string): string[] | { reason: string } {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    const code = c.charCodeAt(0);
    if (c === ' ' || c === '\t') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) return { reason: `unterminated ${c === '"' ? 'double' : 'single'} quote` };
      const body = line.slice(i + 1, end);
      // Inside double quotes $ ` \ ! expand; some shells treat \ and ! specially inside single quotes too.
      for (const b of body) {
        const bc = b.charCodeAt(0);
        if (bc < 0x20 || bc === 0x7f) return { reason: 'control character or newline inside quotes' };
        if (b === '$' || b === '`' || b === '\\' || b === '!') return { reason: `${JSON.stringify(b)} inside quotes` };
      }
      word += body;
      inWord = true;
      i = end;
      continue;
    }
    if (code < 0x20 || code === 0x7f) return { reason: c === '\n' || c === '\r' ? 'newline (a second command)' : 'control character' };
    if (!PLAIN.test(c)) return { reason: `shell syntax ${JSON.stringify(c)}` };
    word += c;
    inWord = true;
  }
  if (inWord) words.push(word);
  return words;
}

function basename(word: string): string {
  const i = word.lastIndexOf('/');
  return i >= 0 ? word.slice(i + 1) : word;
}

type Unwrap = { rest: string[] } | { reason: string };

/** Option parsers for the wrappers we unwrap: each returns the wrapped argv, or why it cannot. */
const UNWRAP: Record<string, (args: string[]) => Unwrap> = {
  sudo: (a) => opts(a, { '-u': 1, '-g': 1, '-n': 0, '-H': 0, '--user': 1, '--group': 1, '--non-interactive': 0 }),
  nice: (a) => opts(a, { '-n': 1, '--adjustment': 1 }),
  nohup: (a) => opts(a, {}),
  ionice: (a) => opts(a, { '-c': 1, '-n': 1, '-t': 0, '--class': 1, '--classdata': 1 }),
  stdbuf: (a) => opts(a, { '-i': 1, '-o': 1, '-e': 1 }),
  timeout: (a) => {
    const r = opts(a, { '-s': 1, '-k': 1, '--signal': 1, '--kill-after': 1, '--preserve-status': 0, '--foreground': 0, '-v': 0, '--verbose': 0 });
    if ('reason' in r) return r;
    if (r.rest.length === 0 || !/^\d+(\.\d+)?[smhd]?$/.test(r.rest[0])) return { reason: 'timeout without a plain duration' };
    return { rest: r.rest.slice(1) };
  },
};

/** Known options only (`-u x`, `-ux`, `--user=x`), then `--` or the first non-option word. */
function opts(args: string[], known: Record<string, 0 | 1>): Unwrap {
  let i = 0;
  while (i < args.length && args[i].startsWith('-')) {
    const a = args[i];
    if (a === '--') return { rest: args.slice(i + 1) };
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a.startsWith('--') ? a : a.slice(0, 2);
    const takes = known[name];
    if (takes === undefined) return { reason: `option ${a} of a command wrapper` };
    if (takes === 1) {
      const inline = a.startsWith('--') ? eq > 0 : a.length > 2;
      if (!inline) i++;
      if (i >= args.length) return { reason: `option ${a} without its value` };
    } else if (!a.startsWith('--') && a.length > 2) {
      return { reason: `combined options ${a} of a command wrapper` };
    }
    i++;
  }
  return { rest: args.slice(i) };
}

const MAX_WRAPPERS = 4;

/** Classifies one exec command line. */
export function classifyCommand(line: string): CommandClass {
  const words = plainWords(line);
  if (!Array.isArray(words)) return { simple: false, reason: words.reason };
  if (words.length === 0) return { simple: false, reason: 'empty command (the login shell would start)' };
  // `NAME=value cmd`: an assignment prefix changes the command's environment (PATH, LD_PRELOAD ...).
  if (words[0].includes('=')) return { simple: false, reason: 'variable assignment before the command' };
  const programs: string[] = [];
  let argv = words;
  for (let depth = 0; ; depth++) {
    if (argv.length === 0) return { simple: false, reason: 'a wrapper without a command' };
    const prog = basename(argv[0]);
    // zsh runs `- cmd` as cmd; `=cmd` expands to its path: neither is a program name.
    if (prog === '' || argv[0].includes('=') || prog.startsWith('-')) return { simple: false, reason: 'no program name' };
    programs.push(prog);
    const unwrap = UNWRAP[prog];
    if (unwrap) {
      if (depth >= MAX_WRAPPERS) return { simple: false, reason: 'too many nested wrappers' };
      const r = unwrap(argv.slice(1));
      if ('reason' in r) return { simple: false, reason: r.reason };
      argv = r.rest;
      continue;
    }
    if (prog === 'find') {
      const action = argv.find((w) => FIND_ACTIONS.test(w));
      if (action) return { simple: false, reason: `find ${action} runs, deletes or writes` };
      break;
    }
    if (codeRunnerOf(prog)) return { simple: false, reason: `${prog} runs code or other commands` };
    break;
  }
  return { simple: true, argv: words, programs };
}
