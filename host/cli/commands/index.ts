import type { Command } from 'commander';
import * as resync from './resync.js';
import * as compare from './compare.js';
import * as checksum from './checksum.js';
import * as info from './info.js';
import * as create from './create.js';
import * as replication from './replication-commands.js';
import * as web from './web.js';
import * as replica from './replica.js';
import * as cert from './cert.js';

/** Each command lives in its own file and adds itself to the program here. */
export function registerCommands(program: Command): void {
  for (const c of [resync, compare, checksum]) c.register(program);
  info.register(program);
  create.register(program);
  replication.register(program);
  web.register(program);
  replica.register(program);
  cert.register(program);
}
