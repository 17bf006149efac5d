import { randomUUID } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { access, constants, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';
import { givenNetwork, loadNetwork, type NetworkSettings } from '../transport/network-settings.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { RemoteReplicaSite } from '../replica/remote-site.js';
import type { Replication } from './replication.js';
import { vmFolderName } from '../replica/vm-name.js';

/**
 * Test-VMReplicationConnection: the checks enable-replication makes before it records anything, run
 * on their own. For a replica server: the certificates load, the server is reached, both sides
 * authenticate (mutual TLS) and the server takes the folder (confined to its root, not another VM's).
 * For a directory: it is a folder this user can write in (or can be made in one), and the VM's folder
 * in it is not another VM's. With a VM (`--vm`), its own replica and settings are tested, exactly as
 * its cycles will connect. Nothing is written, except a probe file removed at once in a local folder.
 */
export interface ConnectionTest {
  Replica: string;
  ReplicaServerName: string;
  ReplicaServerPort: number | null;
  AuthenticationType: 'Certificate' | 'None';
  CertificateThumbprint: string | null;
  /** The folder on the replica site the VM uses (or would use). */
  Folder: string;
  Result: 'Succeeded';
  Message: string;
}

export async function testReplicationConnection(
  rep: Replication,
  input: { replica?: string; vm?: string; network?: NetworkSettings },
): Promise<ConnectionTest> {
  if ((input.replica === undefined) === (input.vm === undefined)) {
    throw new VhdsyncError('USAGE', 'test-replication-connection: give a replica (a directory or tls://HOST:PORT[/NAME]) or --vm NAME, not both');
  }
  if (input.vm !== undefined) {
    const vm = await rep.get(input.vm);
    if (isReplicaAddress(vm.replica)) {
      const address = parseSiteAddress(vm.replica, vmFolderName(vm.name));
      await rep.site(vm).lastApplied();
      return remoteResult(vm.replica, address, vm.network ?? {});
    }
    await checkLocalFolder(vm.replica);
    await rep.localSite(vm).lastApplied(); // a replica.json of another VM is refused here
    return localResult(vm.replica, join(vm.replica, vmFolderName(vm.name)));
  }
  const text = input.replica!;
  const network = givenNetwork(input.network ?? {});
  if (isReplicaAddress(text)) {
    const address = parseSiteAddress(text, 'vhdsync-connection-test');
    const dial = await loadNetwork(network, `test-replication-connection ${text}`);
    // The server checks a site description as for any VM: one small disk, nothing is created.
    const site = new RemoteReplicaSite(address, { vm: address.target, vmId: randomUUID(), disks: [{ index: 0, name: 'connection-test.img', diskId: randomUUID(), virtualSize: 1 << 20, format: 'raw', sectorSize: 512 }] }, async () => dial);
    try {
      await site.lastApplied();
    } catch (e) {
      // The folder exists and is another VM's replica: the connection itself worked.
      if (!(e instanceof VhdsyncError && e.code === 'STATE' && /belongs to another VM/.test(e.message))) throw e;
      return { ...(await remoteResult(address.url, address, network)), Message: `The connection with the replica server ${address.display} was successful; the folder '${address.target}' there is the replica of an existing VM (enable-replication would need another NAME).` };
    }
    return remoteResult(address.url, address, network);
  }
  const dir = resolve(text);
  await checkLocalFolder(dir);
  return localResult(dir, dir);
}

async function remoteResult(replica: string, address: { host: string; port: number; display: string; target: string }, network: NetworkSettings): Promise<ConnectionTest> {
  return {
    Replica: replica,
    ReplicaServerName: address.host,
    ReplicaServerPort: address.port,
    AuthenticationType: 'Certificate',
    CertificateThumbprint: await certificateThumbprint(network.cert),
    Folder: address.target,
    Result: 'Succeeded',
    Message: `The connection with the replica server ${address.display} (folder '${address.target}') was successful: mutual TLS with certificate authentication.`,
  };
}

function localResult(dir: string, folder: string): ConnectionTest {
  return {
    Replica: dir,
    ReplicaServerName: 'localhost',
    ReplicaServerPort: null,
    AuthenticationType: 'None',
    CertificateThumbprint: null,
    Folder: folder,
    Result: 'Succeeded',
    Message: `The replica directory ${dir} can be written.`,
  };
}

/** Hyper-V's CertificateThumbprint: the SHA-1 of the certificate, 40 hex digits, upper case. */
export async function certificateThumbprint(certFile: string | undefined): Promise<string | null> {
  if (!certFile) return null;
  try {
    return new X509Certificate(await readFile(certFile)).fingerprint.replace(/:/g, '').toUpperCase();
  } catch {
    return null;
  }
}

/** A directory this user can write in, or the nearest existing folder above it (it will be made there). */
async function checkLocalFolder(dir: string): Promise<void> {
  let at = dir;
  for (;;) {
    const st = await stat(at).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw ioError(at, e);
    });
    if (st) {
      if (!st.isDirectory()) throw new VhdsyncError('USAGE', `${at}: not a folder; the replica directory must be one`);
      break;
    }
    const up = dirname(at);
    if (up === at) throw new VhdsyncError('NOT_FOUND', `${dir}: no folder of this path exists`);
    at = up;
  }
  await access(at, constants.W_OK).catch((e) => {
    throw ioError(at, e);
  });
  const probe = await mkdtemp(join(at, '.vhdsync-probe-')).catch((e) => {
    throw ioError(at, e);
  });
  await rm(probe, { recursive: true, force: true });
}
