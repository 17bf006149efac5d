/**
 * `vhdsync web`: serve the static compare page (dist/web/, built by scripts/build-web.mjs) on
 * 127.0.0.1. Files only, GET and HEAD only, nothing outside the web root: the images a user picks
 * never reach this server — the page reads them in the browser.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';

/** dist/web/, next to dist/cli/ in the built package. */
export const WEB_ROOT = fileURLToPath(new URL('../../web/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/**
 * The page needs nothing from any other origin; `connect-src 'none'` makes "nothing is uploaded" a
 * rule the browser enforces, and 'wasm-unsafe-eval' is what compiling the core takes.
 */
const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

export interface WebServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Serve `root` on 127.0.0.1:`port` (0 picks a free port). */
export async function serveWeb(options: { port?: number; root?: string } = {}): Promise<WebServer> {
  const root = normalize(options.root ?? WEB_ROOT).replace(/[\\/]*$/, sep);
  try {
    await stat(join(root, 'index.html'));
  } catch {
    throw new VhdsyncError('NOT_FOUND', `the web app is not built (no ${join(root, 'index.html')}); run 'npm run build' first`);
  }
  const server = createServer((req, res) => {
    handle(root, req, res).catch(() => send(res, 500, 'internal error'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new VhdsyncError('USAGE', `port ${options.port} is already in use; pick another with --port`)
          : new VhdsyncError('IO', `cannot listen on 127.0.0.1:${options.port}: ${e.message}`),
      ),
    );
    server.listen(options.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function send(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': 'text/plain; charset=utf-8', ...headers });
  res.end(`${text}\n`);
}

/** The file under `root` that `url` names, or undefined for anything that is not a plain relative path. */
export function resolveStatic(root: string, url: string): string | undefined {
  const path = url.split(/[?#]/, 1)[0];
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return undefined;
  }
  if (!decoded.startsWith('/') || decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const segments = decoded.split('/').slice(1);
  if (segments.some((s) => s.startsWith('.'))) return undefined; // '.', '..' and dotfiles
  const rel = segments.join('/') || 'index.html';
  const file = normalize(join(root, rel));
  return file.startsWith(root) ? file : undefined;
}

async function handle(root: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
    return;
  }
  const file = resolveStatic(root, req.url ?? '/');
  if (!file) {
    send(res, 400, 'bad path');
    return;
  }
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    send(res, 404, 'not found');
    return;
  }
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    'Content-Type': TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'Content-Length': String(size),
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(file)
    .on('error', () => res.destroy())
    .pipe(res);
}

export function register(program: Command): void {
  program
    .command('web')
    .description('Serve the compare page on 127.0.0.1: pick two images in a browser and compare them there (nothing is uploaded)')
    .option('--port <n>', 'port to listen on (0 picks a free one)', '8080')
    .action(async (flags: { port: string }) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        throw new VhdsyncError('USAGE', `--port must be an integer between 0 and 65535 (got '${flags.port}')`);
      }
      const web = await serveWeb({ port });
      process.stdout.write(`vhdsync web: open ${web.url} (Ctrl+C to stop)\n`);
      const stop = () => {
        void web.close().then(() => process.exit(0));
        // Keep-alive connections from an open tab would hold close() open; don't wait for them.
        web.server.closeAllConnections();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
