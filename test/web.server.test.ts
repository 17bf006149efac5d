/** `vhdsync web`'s server: static files from its root only, GET/HEAD only, never a byte from outside. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveStatic, serveWeb, type WebServer } from '../host/cli/commands/web.js';
import { tempDir } from './support/temp-dir.js';

let web: WebServer;
let cleanup: () => void;
const SECRET = 'do-not-serve-this';

/** A raw request: the path goes out exactly as written (fetch and URL would normalise `..` away). */
function get(path: string, method = 'GET'): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const { port } = new URL(web.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  const t = tempDir('vhdsync-web-');
  cleanup = t.cleanup;
  const root = join(t.dir, 'web');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>page</title>');
  writeFileSync(join(root, 'app.js'), 'export {};');
  writeFileSync(join(root, 'sub', 'x.css'), 'body{}');
  writeFileSync(join(root, '.env'), SECRET);
  writeFileSync(join(t.dir, 'secret.txt'), SECRET);
  writeFileSync(join(t.dir, 'web-other.txt'), SECRET); // a sibling whose name starts like the root
  web = await serveWeb({ port: 0, root });
});
afterAll(async () => {
  await web?.close();
  await cleanup?.();
});

describe('vhdsync web server', () => {
  it('listens on 127.0.0.1 only and serves the page with a policy that forbids any connection', async () => {
    expect(web.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const r = await get('/');
    expect(r.status).toBe(200);
    expect(r.body).toContain('<title>page</title>');
    expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(r.headers['content-security-policy']).toContain("connect-src 'none'");
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect((await get('/app.js')).headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect((await get('/sub/x.css?v=1')).status).toBe(200);
    expect((await get('/missing.js')).status).toBe(404);
    expect((await get('/sub')).status).toBe(404); // a directory is not a file
  });

  it.each([
    '/../secret.txt',
    '/sub/../../secret.txt',
    '/%2e%2e/secret.txt',
    '/%2E%2E%2Fsecret.txt',
    '/..%2fsecret.txt',
    '/..%5csecret.txt',
    '/%5c..%5csecret.txt',
    '/../web-other.txt',
    '/.env',
    '/sub/%2e%2e/.env',
    '/index.html%00.js',
    '/%E0%A4%A',
    '//etc/passwd',
  ])('refuses %s without revealing anything outside the root', async (path) => {
    const r = await get(path);
    expect([400, 404]).toContain(r.status);
    expect(r.body).not.toContain(SECRET);
    expect(r.body).not.toContain('root:');
  });

  it('answers HEAD without a body and refuses every other method', async () => {
    const head = await get('/index.html', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    for (const m of ['POST', 'PUT', 'DELETE']) {
      const r = await get('/index.html', m);
      expect(r.status).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD');
    }
  });

  it('resolveStatic maps / to index.html and never leaves the root', () => {
    expect(resolveStatic('/srv/web/', '/')).toBe('/srv/web/index.html');
    expect(resolveStatic('/srv/web/', '/a/b.js#x')).toBe('/srv/web/a/b.js');
    expect(resolveStatic('/srv/web/', '/a/../../x')).toBeUndefined();
    expect(resolveStatic('/srv/web/', 'x')).toBeUndefined();
  });

  it('says how to fix a missing build instead of serving an empty directory', async () => {
    const t = tempDir('vhdsync-web-empty-');
    try {
      await expect(serveWeb({ port: 0, root: t.dir })).rejects.toThrow(/the web app is not built .*run 'npm run build' first/);
    } finally {
      await t.cleanup();
    }
  });
});
