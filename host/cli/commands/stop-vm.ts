import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  timeout: string;
}

/** Stop-VM: ask the process running the VM (`vhdsync run`, `workload`) to shut down cleanly, and wait. */
export function register(program: Command): void {
  withHome(
    program
      .command('stop-vm')
      .description('Shut a running VM down cleanly (logs sealed, fingerprints recorded) and wait until it is off')
      .argument('<vm>', 'VM name')
      .option('--timeout <seconds>', 'give up waiting after this long', '60'),
  ).action(async (name: string, flags: Flags) => {
    const timeout = Number(flags.timeout);
    if (!(timeout > 0)) throw new VhdsyncError('USAGE', `--timeout: '${flags.timeout}' is not a number of seconds`);
    const rep = replicationFor(flags);
    await rep.get(name);
    const pid = await rep.runningPid(name);
    if (pid === undefined) throw new VhdsyncError('STATE', `virtual machine '${name}' is not running`);
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + timeout * 1000;
    while ((await rep.runningPid(name)) !== undefined) {
      if (Date.now() > deadline) throw new VhdsyncError('BUSY', `virtual machine '${name}' (process ${pid}) did not shut down within ${timeout} s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const after = await rep.get(name);
    if (flags.json) printJson({ VMName: name, ProcessId: pid, State: after.state });
    else process.stdout.write(`${name}: shut down (process ${pid}); replication state ${after.state}\n`);
  });
}
