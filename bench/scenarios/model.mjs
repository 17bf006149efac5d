// The arithmetic of the benchmark, in one place: how a time is computed where a run over the simulated
// link would take too long, and how a result at scale s is carried to the seed's 80 GB.
//
// Symbols (per row, summed over the two VMs, measured at scale s):
//   S  local work: seconds of the same resync over a link with the row's latency but no rate limit
//      (both sides scanning, hashing, comparing, writing the overlay, merging). For the 80 GB figure,
//      where the run over the link was measured too, the larger of S and (that run − W/R) is used.
//   W  bytes on the wire, both directions, every frame (what the library reports)
//   D  bytes the primary read from its disk (the replica reads as much in parallel, on its own disk)
//   R  rate of the link (bytes/s); Rd  uncached read rate of a disk, measured on this machine
//   w  guest write rate while a resync runs (seed.mjs WRITE_RATE)
//   F  fixed cost of one run, whatever the disk size (ours: worker start, WASM compile, handshake,
//      the merge and commit round trips; rsync: process start), measured on a 16 MiB pair
//
// Ours, computed at scale s (no overlap of work and transfer assumed: an upper bound):
//   T_s  = S + (W + Wt) / R,   Wt = w · (S + W / R) · (1 + TRACK_OVERHEAD)
//   (Wt: writes the guests make while the compare runs, tracked and replayed after the merge; in a
//   measured run they are real and already inside W.)
// Ours, at 80 GB (everything that depends on the disk grows as 1/s, the fixed cost does not; the scan
// cannot beat the disk), per VM, then summed (the VMs resync one after the other):
//   T_80 = F + max((S − F) / s, D / (s · Rd)) + W_all / (s · R),   W_80 = W_all / s
// The guests keep writing while a resync runs; those writes are tracked and replayed after the merge.
// At 80 GB they are what the rate gives over the resync's own duration (not scaled from a short run,
// whose length is mostly fixed cost):
//   Wt_80 = w · T_80 · (1 + TRACK_OVERHEAD),   T_80 with replay = T_80 + Wt_80 / R
// Peers (rsync, copy), at the link (perfect overlap and full duplex assumed: a lower bound, in their favour):
//   T = max(t, sent / R, received / R)
//   T_80 = F + max((t − F) / s, B / (s · Rd), sent / (s · R), received / (s · R))
//   with t their measured local time and B the bytes of the image file they read.

/** Bytes of framing per replayed tracked write, relative to its data (≈ 30 B per 8 KiB–4 MiB write). */
export const TRACK_OVERHEAD = 0.01;

export const FORMULAS = {
  oursComputed: 'T_s = S + (W + Wt)/R, Wt = w·(S + W/R)·1.01',
  oursAt80: 'T_80 = F + max((S − F)/s, D/(s·Rd)) + W/(s·R); W_80 = W/s',
  replayAt80: 'Wt_80 = w·T_80·1.01; T_80 + Wt_80/R',
  peerAtLink: 'T = max(t, sent/R, received/R)',
  peerAt80: 'T_80 = F + max((t − F)/s, B/(s·Rd), sent/(s·R), received/(s·R)); bytes_80 = bytes/s',
};

/** Our time at scale when the run over the slow link is not measured. */
export function oursComputed({ localSeconds, wireBytes, rate, writeRate }) {
  const compareSeconds = localSeconds + wireBytes / rate;
  const trackedBytes = writeRate * compareSeconds * (1 + TRACK_OVERHEAD);
  return { seconds: localSeconds + (wireBytes + trackedBytes) / rate, trackedBytes };
}

/** Our bytes and time carried to 80 GB. */
export function oursAt80({ scale, localSeconds, fixedSeconds = 0, bytesRead, wireBytes, rate, readRate }) {
  const fixed = Math.min(fixedSeconds, localSeconds);
  const scan = fixed + Math.max((localSeconds - fixed) / scale, bytesRead / (scale * readRate));
  return { seconds: scan + wireBytes / (scale * rate), wireBytes: wireBytes / scale, scanSeconds: scan };
}

/** The replay of guest writes made during a resync of `seconds` at full size. */
export function replayAt80({ seconds, rate, writeRate }) {
  const bytes = writeRate * seconds * (1 + TRACK_OVERHEAD);
  return { bytes, seconds: bytes / rate };
}

/** A peer's time over the link, from its local time and bytes (lower bound). */
export function peerAtLink({ localSeconds, sent, received, rate }) {
  return Math.max(localSeconds, sent / rate, received / rate);
}

/** A peer's bytes and time carried to 80 GB (lower bound). */
export function peerAt80({ scale, localSeconds, fixedSeconds = 0, fileBytes, sent, received, rate, readRate }) {
  const fixed = Math.min(fixedSeconds, localSeconds);
  const seconds = fixed + Math.max((localSeconds - fixed) / scale, fileBytes / (scale * readRate), sent / (scale * rate), received / (scale * rate));
  return { seconds, wireBytes: (sent + received) / scale };
}
