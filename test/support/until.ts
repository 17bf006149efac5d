/**
 * Wait, polling every 10 ms (never a fixed sleep), until `check` holds; fail naming `what` after
 * `tries` checks. Each check may itself run the CLI (a few hundred ms on a loaded machine).
 */
export async function until(check: () => Promise<boolean> | boolean, what: string, tries = 1000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}
