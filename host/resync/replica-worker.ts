import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { adoptCompiledModule } from '../core/index.js';
import { useSyncIo } from '../disk/index.js';
import { MemoryLink, type LinkShape } from '../transport/memory-link.js';
import { ReplicaEndpoint } from './replica.js';

/**
 * The replica endpoint in its own thread, so both sides read and hash in parallel. This thread does
 * nothing but the replica's disk work, so blocking I/O beats a thread-pool hop per call (thousands of
 * scattered leaf writes, then the merge). The WASM module comes compiled from the primary's thread.
 */
useSyncIo(true);
interface Job {
  port: MessagePort;
  shape: LinkShape;
  replicaPath: string;
}
const data = workerData as Partial<Job> & { core?: Parameters<typeof adoptCompiledModule>[0]; waitForJob?: boolean };
if (data.core) adoptCompiledModule(data.core);
// A thread kept ready (connect.ts keepReplicaThreadReady) gets its job as its first message.
const job: Job = data.waitForJob ? await new Promise<Job>((resolve) => parentPort!.once('message', resolve)) : (data as Job);
await new ReplicaEndpoint(new MemoryLink(job.port, job.shape), job.replicaPath).run();
