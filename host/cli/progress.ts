import type { ResyncProgress } from '../resync/resync.js';
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
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const text = `${(frac * 100).toFixed(1).padStart(5)}% ${formatSize(done)}/${formatSize(total)} ${detail}`;
    // The words first: the bar gets what room is left on the line (up to 30 cells, none below 8).
    const cols = process.stderr.columns ?? 120;
    const width = Math.min(30, cols - 2 - text.length);
    const fill = Math.round(frac * width);
    const line = width >= 8 ? `${'█'.repeat(fill)}${'░'.repeat(width - fill)} ${text}` : text;
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

/**
 * The words after the bar while a resync compares, as rsync users expect them: what was sent and at
 * what rate, and an ETA that counts the data still crossing the link. While data is on its way the ETA
 * is at least 0:01 (never 0:00), and "sent" is what was handed to the link (never 0 B once sending).
 */
export function compareDetail(p: ResyncProgress): string {
  const rate = p.sendRate === undefined || p.bytesSent === 0 ? '' : ` at ${formatSize(p.sendRate)}/s`;
  const sendLeft = p.sendSeconds ?? 0;
  const eta = p.etaSeconds === undefined ? undefined : sendLeft > 0 ? Math.max(1, Math.ceil(p.etaSeconds)) : p.etaSeconds;
  return `compared · ${formatSize(p.bytesSent)} sent${rate} · ETA ${formatEta(eta)}`;
}
