/** The one way vhdsync writes JSON for people and scripts: two-space indent and a final newline. The CLI's
 * `--json` output and the page's JSON download both use it, so the two are byte-identical. Browser-safe. */
export function jsonText(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}
