/** Shared by the browser tests: Debian's Chromium through playwright-core, and `vhdsync web` as a child process. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { background, type CliAt } from './cli.js';
import { ROOT } from './paths.js';
import { tempDir } from './temp-dir.js';

export const CHROMIUM = '/usr/bin/chromium';
export const OUTPUT = join(ROOT, 'test-output');

/** A headless Chromium with a fresh profile. A missing browser is a failure, not a skip (.ci/run installs it). */
export async function launchChromium(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)`);
  const profile = tempDir('vhdsync-chromium-');
  const context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1000, height: 900 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      profile.cleanup();
    },
  };
}

/** `vhdsync web --port 0` from the built CLI; resolves with the URL it prints. */
export async function startWebCli(at: CliAt): Promise<{ url: string; stop: () => Promise<void> }> {
  const web = background(['web', '--port', '0'], at);
  const orphanGuard = () => web.child.kill('SIGKILL'); // never leave a server behind if the test process dies
  process.once('exit', orphanGuard);
  const printed = () => /http:\/\/127\.0\.0\.1:\d+\//.exec(web.output().stdout + web.output().stderr);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    web.ready(() => printed() !== null),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`vhdsync web printed no URL in 10 s: ${web.output().stdout}${web.output().stderr}`)), 10_000))),
  ]).finally(() => clearTimeout(timer));
  return {
    url: printed()![0],
    stop: async () => {
      process.off('exit', orphanGuard);
      if (web.child.exitCode !== null || web.child.signalCode !== null) return;
      web.child.kill('SIGTERM');
      await web.exited;
    },
  };
}

export interface PageRun {
  state: string;
  /** What `vhdsync compare --json` prints, as the page computed it (undefined when it did not finish). */
  json?: { identical: boolean; differingBytes: number; ranges: { start: number; end: number }[]; sizeA: number; sizeB: number };
  /** console errors and uncaught exceptions seen while the page ran. */
  errors: string[];
}

/** Open the page, pick both files through the inputs, wait until it reports done or error. */
export async function compareInPage(
  page: Page,
  url: string,
  primary: string,
  replica: string,
  timeout = 30_000,
  beforePick?: (page: Page) => Promise<void>,
): Promise<PageRun> {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await beforePick?.(page);
  await page.setInputFiles('#primary-file', primary);
  await page.setInputFiles('#replica-file', replica);
  try {
    await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout });
  } catch (e) {
    throw new Error(`the page never finished: ${(e as Error).message.split('\n')[0]}; console errors: ${JSON.stringify(errors)}`);
  }
  const state = (await page.getAttribute('body', 'data-state')) ?? '';
  const text = state === 'done' ? await page.textContent('#result-json') : null;
  return { state, json: text ? JSON.parse(text) : undefined, errors };
}
