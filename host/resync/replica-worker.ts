import { workerData, type MessagePort } from 'node:worker_threads';
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
const { port, shape, replicaPath, core } = workerData as { port: MessagePort; shape: LinkShape; replicaPath: string; core?: Parameters<typeof adoptCompiledModule>[0] };
if (core) adoptCompiledModule(core);
await new ReplicaEndpoint(new MemoryLink(port, shape), replicaPath).run();
