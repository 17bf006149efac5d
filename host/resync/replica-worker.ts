import { workerData, type MessagePort } from 'node:worker_threads';
import { MemoryLink, type LinkShape } from '../transport/memory-link.js';
import { ReplicaEndpoint } from './replica.js';

/** The replica endpoint in its own thread, so both sides read and hash in parallel. */
const { port, shape, replicaPath } = workerData as { port: MessagePort; shape: LinkShape; replicaPath: string };
await new ReplicaEndpoint(new MemoryLink(port, shape), replicaPath).run();
if (process.env.VHDSYNC_DEBUG) setTimeout(() => console.error("worker still alive:", process.getActiveResourcesInfo()), 2000).unref();
