import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';

/** A path as the user would write it: relative to the working folder when inside it. */
export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/**
 * `file` made absolute (relative to `base`, default the working folder), after checking that it
 * exists and is of the kind asked; else a UserError naming `where` (a flag, an input, a key).
 */
export function checkedPath(file: string, where: string, kind: 'file' | 'folder' | 'file or folder', base?: string): string {
  const abs = base ? path.resolve(base, file) : path.resolve(file);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    throw new UserError(`${where}: ${kind} not found: ${displayPath(abs)}`);
  }
  if ((kind === 'file' && !stat.isFile()) || (kind === 'folder' && !stat.isDirectory())) throw new UserError(`${where}: not a ${kind}: ${displayPath(abs)}`);
  return abs;
}
