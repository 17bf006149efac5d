// The published Hyper-V Replica scenario (the seed) and the constants this benchmark derives from it.
//
// Source: Hyper-V team blog "Resynchronization of virtual machines in Hyper-V Replica", 2013-05-10
// (MicrosoftDocs/Virtualization-Documentation, team-blog/2013/20130510-…); quoted in
// ../shared/reference/sync-peers.md §2.1. Setup there: one host, 4 VMs (2 file servers, 2 SQL servers)
// under typical load, 2 of them replicated, ~80 GB replicated during Online IR. GB = 10^9 bytes.

export const GB = 1e9;
export const MB = 1e6;
export const HOUR = 3600;
export const DAY = 24 * HOUR;

/** ~80 GB replicated during Online IR: the size everything is scaled from. */
export const FULL_SIZE_BYTES = 80 * GB;

/** Links of the seed. Latency is ours (the blog gives none): a metro link and a branch-office WAN. */
export const LINKS = {
  '1gbps': { name: '1 Gbps', rate: 1e9 / 8, latencyMs: 1 },
  '1.5mbps': { name: '1.5 Mbps', rate: 1.5e6 / 8, latencyMs: 40 },
};

/**
 * The published rows. `bytes` is Hyper-V's resync (or IR) size, `seconds` its time. Online IR at 1 Gbps
 * is given twice in the blog (~1 h and ~1.5 h); the faster one is the comparator here.
 */
export const HYPERV = {
  'immediate@1gbps': { bytes: 100 * MB, seconds: 1 * HOUR, label: '~100 MB / ~1 h' },
  'offline@1gbps': { bytes: 5.5 * GB, seconds: 2 * HOUR, label: '~5.5 GB / ~2 h' },
  'ir@1gbps': { bytes: 80 * GB, seconds: 1 * HOUR, label: '~80 GB / ~1 h (1–1.5 h)' },
  'immediate@1.5mbps': { bytes: 78 * MB, seconds: 1 * HOUR, label: '~78 MB / ~1 h' },
  'offline@1.5mbps': { bytes: 10 * GB, seconds: 1 * DAY, label: '~10 GB / ~1 day' },
  'ir@1.5mbps': { bytes: 80 * GB, seconds: 4 * DAY, label: '~80 GB / ~4 days' },
};

/**
 * Guest write rate of the two replicated VMs together, while they run (bytes per second of real time;
 * it does not scale: at scale s a resync runs ~s times as long, so it sees ~s times the writes).
 * Derived from the seed: the 1 Gbps offline churn (5.5 GB) accumulated while the resync waited for
 * the default window (18:30–06:00). The longest such wait — broken just after 06:00 — is 12.5 h, so
 * 5.5 GB / 12.5 h ≈ 0.12 MB/s. It is also a load a 1.5 Mbps link (0.19 MB/s) can carry, which any
 * replication over that link needs.
 */
export const WRITE_RATE = (5.5 * GB) / (12.5 * HOUR);

/** The rows, in the order of the published table, then Online IR as the baseline. */
export const ROWS = [
  { id: 'offline@1gbps', scenario: 'offline', link: '1gbps' },
  { id: 'immediate@1gbps', scenario: 'immediate', link: '1gbps' },
  { id: 'offline@1.5mbps', scenario: 'offline', link: '1.5mbps' },
  { id: 'immediate@1.5mbps', scenario: 'immediate', link: '1.5mbps' },
  { id: 'ir@1gbps', scenario: 'ir', link: '1gbps' },
  { id: 'ir@1.5mbps', scenario: 'ir', link: '1.5mbps' },
];

export const SCENARIO_NAMES = { immediate: 'immediate', offline: 'offline scheduling', ir: 'Online IR' };

/**
 * Targets from issue 8, reported (never asserted): immediate rows time ≤ 1/10 of Hyper-V's and bytes
 * ≤ Hyper-V's; offline rows bytes ≤ Hyper-V's and time ≤ 1/2; fewer bytes and less time than rsync in
 * every row. Online IR rows have no Hyper-V target in the issue; they are reported against rsync only.
 */
export const TARGETS = {
  immediate: { timeVsHyperV: 0.1, bytesVsHyperV: 1 },
  offline: { timeVsHyperV: 0.5, bytesVsHyperV: 1 },
  ir: {},
  rsync: { time: 1, bytes: 1 },
};
