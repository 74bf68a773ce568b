/**
 * Reused buffers for streaming tensor bytes. Memory the process has not touched before costs a
 * page fault per 4 KiB on first use, which on the bench machine made reading a 32 MB chunk into
 * a new buffer 10 times slower than into a reused one (docs/measured.md, "Scale"). Readers,
 * slicers and converters therefore take their chunk buffers from here, in nested synchronous
 * scopes: a buffer is only valid inside the callback it was lent to.
 */
const free: ArrayBuffer[] = [];
/** Larger buffers are not kept once returned (a whole tensor read at once, say). */
const KEEP_MAX_BYTES = 128 * 2 ** 20;
const GRAIN = 2 ** 20;

export function withScratch<R>(bytes: number, fn: (buffer: Uint8Array) => R): R {
  let best = -1;
  for (let i = 0; i < free.length; i++) {
    if (free[i].byteLength >= bytes && (best < 0 || free[i].byteLength < free[best].byteLength)) best = i;
  }
  const buffer = best >= 0 ? free.splice(best, 1)[0] : new ArrayBuffer(Math.max(GRAIN, Math.ceil(bytes / GRAIN) * GRAIN));
  try {
    return fn(new Uint8Array(buffer, 0, bytes));
  } finally {
    if (buffer.byteLength <= KEEP_MAX_BYTES) free.push(buffer);
  }
}
