/**
 * Entry point of the WebAssembly core: `import { getCore } from './core/index.js'` (or
 * `vhdsync/core` for embedders). The same module loads in Node, browsers and workers.
 */
import { WasmCore } from './core.js';
import type { Core } from './types.js';
import { chooseBuild, instantiate, instantiateSync, type LoadOptions } from './wasm.js';

export { adoptCompiledModule, compiledModule } from './wasm.js';

export type { Core, WasmRegion } from './types.js';
export type { LoadOptions } from './wasm.js';

/** A new core instance (own linear memory), compiled asynchronously: the browser main-thread way. */
export async function loadCore(options: LoadOptions = {}): Promise<Core> {
  return new WasmCore(await instantiate(chooseBuild(options)));
}

/** A new core instance, compiled synchronously (Node, workers). */
export function loadCoreSync(options: LoadOptions = {}): Core {
  return new WasmCore(instantiateSync(chooseBuild(options)));
}

let shared: Core | undefined;

/** The core of this thread, created on first use with the default build choice. */
export function getCore(): Core {
  return (shared ??= loadCoreSync());
}
