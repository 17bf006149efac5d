import { workerData, type MessagePort } from 'node:worker_threads';
import { useSyncIo } from '../disk/index.js';
import { MemoryLink, type LinkShape } from '../transport/memory-link.js';
import { ReplicaEndpoint } from './replica.js';

/**
 * The replica endpoint in its own thread, so both sides read and hash in parallel. This thread does
 * nothing but the replica's disk work, so blocking I/O beats a thread-pool hop per call (thousands of
 * scattered leaf writes, then the merge).
 */
useSyncIo(true);
const { port, shape, replicaPath } = workerData as { port: MessagePort; shape: LinkShape; replicaPath: string };
await new ReplicaEndpoint(new MemoryLink(port, shape), replicaPath).run();
