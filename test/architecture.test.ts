import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './support/paths.js';

/**
 * The layering of docs/ARCHITECTURE.md, checked on the source: arrows point down only, the shared
 * base files (host/*.ts) import no layer, and the browser's code (the page and the WASM core, with
 * everything they import) never imports a `node:` module.
 */

/** Top to bottom. A layer may import the layers after it and the base files, never one before it. */
const LAYERS = ['cli', 'web', 'service', 'nbd', 'replication', 'replica', 'resync', 'tracking', 'transport', 'disk', 'events', 'core'];

const HOST = join(ROOT, 'host');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? (e.name === 'generated' ? [] : sources(join(dir, e.name))) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** A source file without its comments (examples in doc comments are not imports). */
function code(file: string): string {
  return readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

interface Import {
  /** The module named: a path of a .ts file under host/ for a relative import, else as written. */
  target: string;
  /** `import type …` / `export type … from`: erased when compiled. */
  typeOnly: boolean;
}

/** Every import of one file: static, re-exports, side-effect and dynamic. */
function importsOf(file: string): Import[] {
  const text = code(file);
  const found = [
    ...[...text.matchAll(/^(?:import|export)\s+(type\s+)?[^;']*?from\s*'([^']+)'/gm)].map((m) => ({ spec: m[2], typeOnly: m[1] !== undefined })),
    ...[...text.matchAll(/(?:^import\s*|\bimport\(\s*)'([^']+)'/gm)].map((m) => ({ spec: m[1], typeOnly: false })),
  ];
  return found.map(({ spec, typeOnly }) => ({
    target: spec.startsWith('.') ? normalize(join(dirname(file), spec.replace(/\.js$/, '.ts'))) : spec,
    typeOnly,
  }));
}

/** 'cli', 'disk', … for a file in a layer; 'base' for host/*.ts; 'index' for the package's entry. */
function layerOf(file: string): string {
  const parts = relative(HOST, file).split('/');
  if (parts.length === 1) return parts[0] === 'index.ts' ? 'index' : 'base';
  return parts[0];
}

describe('architecture', () => {
  const files = sources(HOST);

  it('every folder under host/ is a known layer', () => {
    const folders = new Set(files.map(layerOf).filter((l) => l !== 'base' && l !== 'index'));
    expect([...folders].filter((f) => !LAYERS.includes(f))).toEqual([]);
  });

  it('imports point down only: no layer imports one above it, base files import no layer', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = layerOf(file);
      if (from === 'index') continue;
      for (const { target } of importsOf(file)) {
        if (!target.startsWith(HOST)) continue;
        const to = layerOf(target);
        if (to === from || to === 'base') continue;
        if (from === 'base' || LAYERS.indexOf(to) < LAYERS.indexOf(from)) upward.push(`${relative(ROOT, file)} imports ${relative(ROOT, target)}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('the browser page and the WASM core import no node: module, directly or through what they import', () => {
    const seen = new Set<string>();
    const queue = files.filter((f) => ['web', 'core'].includes(layerOf(f)));
    const offending: string[] = [];
    while (queue.length > 0) {
      const file = queue.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const { target, typeOnly } of importsOf(file)) {
        if (typeOnly) continue;
        if (target.startsWith('node:')) offending.push(`${relative(ROOT, file)} imports ${target}`);
        else if (target.startsWith(HOST) && !target.includes('/generated/')) queue.push(target);
      }
    }
    expect(seen.size).toBeGreaterThan(10); // the walk really followed the page's imports
    expect(offending).toEqual([]);
  });
});
