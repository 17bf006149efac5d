import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';
import { describe, expect, it } from 'vitest';
import { hex, randomBytes } from './support/bytes.js';
import { oracle128 } from './support/core-reference.js';
import { tempDir } from './support/temp-dir.js';

/** Fails the bundle on any Node built-in, with or without the `node:` prefix. */
const noNodeBuiltins: esbuild.Plugin = {
  name: 'no-node-builtins',
  setup(build) {
    const builtins = /^(node:.*|fs|path|os|crypto|buffer|url|child_process|worker_threads|stream|util)(\/.*)?$/;
    build.onResolve({ filter: builtins }, (args) => ({
      errors: [{ text: `${args.importer} imports the Node built-in '${args.path}'` }],
    }));
  },
};

describe('host/core in a browser bundle', () => {
  it('bundles for platform browser with no Node built-in, and the bundle hashes correctly when loaded', async () => {
    const result = await esbuild.build({
      entryPoints: ['host/core/index.ts'],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      logLevel: 'silent',
      plugins: [noNodeBuiltins],
    });
    expect(result.errors).toEqual([]);
    const code = result.outputFiles[0].text;
    expect(code).not.toMatch(/["']node:/);
    expect(code).not.toMatch(/\brequire\(/);

    const { dir, cleanup } = tempDir('vhdsync-bundle-');
    try {
      const file = join(dir, 'core.bundle.mjs');
      writeFileSync(file, code);
      const bundled = (await import(pathToFileURL(file).href)) as typeof import('../host/core/index.js');
      const xxh128 = await oracle128();
      const data = randomBytes(100_000, 6);
      const core = await bundled.loadCore();
      expect(hex(core.hash128(data))).toBe(xxh128(data));
      expect(hex(bundled.getCore().hashBlocks(data, 4096).subarray(0, 16))).toBe(xxh128(data.subarray(0, 4096)));
      expect(bundled.loadCoreSync({ simd: false }).crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    } finally {
      cleanup();
    }
  });

  it('a bundle that imports a Node built-in is rejected by the same check (the check can fail)', async () => {
    await expect(
      esbuild.build({
        stdin: { contents: "import { readFileSync } from 'node:fs'; console.log(readFileSync);", loader: 'ts', resolveDir: '.' },
        bundle: true,
        format: 'esm',
        platform: 'browser',
        write: false,
        logLevel: 'silent',
        plugins: [noNodeBuiltins],
      }),
    ).rejects.toThrow(/Node built-in 'node:fs'/);
  });
});
