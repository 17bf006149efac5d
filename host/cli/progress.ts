import { formatSize } from '../units.js';

/**
 * A one-line progress bar on stderr, drawn only when stderr is a terminal (never into pipes, logs or
 * --json output), redrawn at most 10 times a second.
 */
export class ProgressBar {
  private last = 0;
  private drawn = false;
  private readonly enabled: boolean;

  constructor(enabled = process.stderr.isTTY === true) {
    this.enabled = enabled;
  }

  update(done: number, total: number, detail = '', force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const fill = Math.round(frac * width);
    const bar = '█'.repeat(fill) + '░'.repeat(width - fill);
    const line = `${bar} ${(frac * 100).toFixed(1).padStart(5)}% ${formatSize(done)}/${formatSize(total)} ${detail}`;
    const cols = process.stderr.columns ?? 120;
    process.stderr.write(`\r${line.slice(0, cols - 1)}\x1b[K`);
    this.drawn = true;
  }

  done(): void {
    if (this.enabled && this.drawn) process.stderr.write('\r\x1b[K');
    this.drawn = false;
  }
}

export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
