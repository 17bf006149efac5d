import { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { registerCommands } from './index.js';

interface Spec {
  name: string;
  summary: string;
  options: string[];
}

/** `vhdsync completion bash|zsh`: a completion script for the commands and options of this version. */
export function register(program: Command): void {
  program
    .command('completion')
    .description("Print a shell completion script: eval \"$(vhdsync completion bash)\" in ~/.bashrc, or the zsh one into a file on $fpath named _vhdsync")
    .argument('<shell>', 'bash or zsh')
    .action(async (shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new VhdsyncError('USAGE', `completion: '${shell}' is not a shell this supports (bash or zsh)`);
      const all = new Command();
      await registerCommands(all, []);
      const specs: Spec[] = all.commands.map((c) => ({
        name: c.name(),
        summary: c.description().split(/[.;:(]/)[0].trim(),
        options: [...c.options.filter((o) => !o.hidden).flatMap((o) => [o.long, o.short]).filter((x): x is string => !!x), '--help'],
      }));
      process.stdout.write(shell === 'bash' ? bashScript(specs) : zshScript(specs));
    });
}

export function bashScript(specs: Spec[]): string {
  const cases = specs.map((s) => `    ${s.name}) opts='${s.options.join(' ')}' ;;`).join('\n');
  return `# vhdsync completion for bash: eval "$(vhdsync completion bash)"
_vhdsync() {
  local cur=\${COMP_WORDS[COMP_CWORD]} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W '${specs.map((s) => s.name).join(' ')} --help --version' -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
    *) opts='--help' ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o filenames -F _vhdsync vhdsync
`;
}

export function zshScript(specs: Spec[]): string {
  const q = (s: string) => s.replace(/'/g, `'\\''`).replace(/:/g, '\\:');
  const cmds = specs.map((s) => `    '${q(s.name)}:${q(s.summary)}'`).join('\n');
  const cases = specs.map((s) => `    ${s.name}) opts=(${s.options.join(' ')}) ;;`).join('\n');
  return `#compdef vhdsync
# vhdsync completion for zsh: save as _vhdsync in a directory on $fpath (or: source <(vhdsync completion zsh))
_vhdsync() {
  local -a cmds opts
  cmds=(
${cmds}
  )
  if (( CURRENT == 2 )); then
    _describe 'vhdsync command' cmds
    return
  fi
  case $words[2] in
${cases}
    *) opts=(--help) ;;
  esac
  if [[ $PREFIX == -* ]]; then
    compadd -- $opts
  else
    _files
  fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _vhdsync "$@"; else compdef _vhdsync vhdsync; fi
`;
}
