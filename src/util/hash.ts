import * as crypto from 'crypto';
import * as fs from 'fs';

export const sha256 = (data: Uint8Array | string): string => crypto.createHash('sha256').update(data).digest('hex');

/** Adds a file's bytes to `hash`, streamed through one buffer. */
export function hashFileInto(hash: crypto.Hash, file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1 << 22);
    for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

/** The sha256 of `files`' bytes one after another (what `cat FILES | sha256sum` prints), hex. */
export function sha256OfFiles(files: readonly string[]): string {
  const hash = crypto.createHash('sha256');
  for (const f of files) hashFileInto(hash, f);
  return hash.digest('hex');
}

/**
 * `value` as canonical JSON: object keys sorted, no spaces, undefined members left out (as
 * JSON.stringify leaves them), so equal settings give equal text whatever order they were built in.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const members = Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value);
}
