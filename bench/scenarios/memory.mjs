// Peak resident memory of this process (the primary and, in its worker thread, the replica endpoint),
// sampled every 20 ms, overall and per labelled section.

export class RssSampler {
  constructor(intervalMs = 20) {
    this.peak = 0;
    this.baseline = process.memoryUsage().rss;
    this.sections = new Map();
    this.label = undefined;
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  sample() {
    const rss = process.memoryUsage().rss;
    if (rss > this.peak) this.peak = rss;
    if (this.label !== undefined && rss > (this.sections.get(this.label) ?? 0)) this.sections.set(this.label, rss);
    return rss;
  }

  /** Run `fn` with samples attributed to `label` (sections do not nest). */
  async during(label, fn) {
    const before = this.label;
    this.label = label;
    this.sample();
    try {
      return await fn();
    } finally {
      this.sample();
      this.label = before;
    }
  }

  peakOf(label) {
    return this.sections.get(label) ?? 0;
  }

  stop() {
    clearInterval(this.timer);
    this.sample();
  }
}
