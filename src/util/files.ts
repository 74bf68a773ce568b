import * as fs from 'fs';
import * as path from 'path';

/** A name beside `file` for writing it before the rename: unique per process and moment. */
export function temporaryName(file: string): string {
  return `${file}.tmp-${process.pid}-${Date.now()}`;
}

/**
 * Writes `data` to `file` under a temporary name first and renames it when complete, so a
 * reader never sees half a file; on failure the temporary file is removed and the error thrown.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = temporaryName(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** `value` as indented JSON with a final newline, written atomically. */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}
