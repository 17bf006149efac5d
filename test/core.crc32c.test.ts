import { beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../host/core/index.js';
import { randomBytes } from './support/bytes.js';
import { BUILDS, coreFor, refCrc32c } from './support/core-reference.js';

describe.each(BUILDS)('CRC-32C ($name build)', ({ simd }) => {
  let core: Core;
  beforeAll(() => {
    core = coreFor(simd);
  });

  it('gives the check value 0xE3069283 for "123456789"', () => {
    expect(core.crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });

  it('gives the RFC 3720 (iSCSI) B.4 test vectors', () => {
    const inc = Uint8Array.from({ length: 32 }, (_, i) => i);
    const dec = Uint8Array.from({ length: 32 }, (_, i) => 31 - i);
    expect(core.crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(core.crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(core.crc32c(inc)).toBe(0x46dd794e);
    expect(core.crc32c(dec)).toBe(0x113fdb5c);
  });

  it('is 0 for no bytes and leaves a running value unchanged', () => {
    expect(core.crc32c(new Uint8Array(0))).toBe(0);
    expect(core.crc32c(new Uint8Array(0), 0xdeadbeef)).toBe(0xdeadbeef);
  });

  it('equals the bit-at-a-time reference for every length 0..300 and misaligned views', () => {
    const data = randomBytes(320, 12);
    for (let len = 0; len <= 300; len++) {
      const view = data.subarray(len % 8, (len % 8) + len);
      expect(core.crc32c(view)).toBe(refCrc32c(view));
    }
  });

  it('equals the reference around the three-stripe lengths (3 x 320 and 3 x 5440 bytes) and past them', () => {
    const data = randomBytes(3 * 5440 * 2 + 3 * 320 + 64, 21);
    for (const len of [959, 960, 961, 968, 1919, 1920, 1927, 16319, 16320, 16321, 16328, 17280, 17287, 32640, 32641, 4096, 65536, data.length]) {
      for (const at of [0, 3]) {
        const view = data.subarray(at, Math.min(data.length, at + len));
        expect(core.crc32c(view)).toBe(refCrc32c(view));
        expect(core.crc32c(view, 0x12345678)).toBe(refCrc32c(view, 0x12345678));
      }
    }
  });

  it('continues across pieces: crc32c(b, crc32c(a)) equals crc32c(a ++ b), also past 256 KiB', () => {
    const data = randomBytes(700_001, 3);
    const whole = core.crc32c(data);
    expect(whole).toBe(refCrc32c(data));
    for (const cut of [0, 1, 7, 262_144, 500_000, 700_001]) {
      expect(core.crc32c(data.subarray(cut), core.crc32c(data.subarray(0, cut)))).toBe(whole);
    }
  });
});
