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

/**
 * Checks, before any work, that `dir` can be the output folder: an existing folder we may write
 * in, or a path whose nearest existing ancestor is one (it is created then). A file there, or a
 * file on the way (ENOTDIR after a whole search), is a UserError naming `where`.
 */
export function checkOutputFolder(dir: string, where: string): void {
  const abs = path.resolve(dir);
  let at = abs;
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(at);
    } catch (e) {
      // ENOTDIR: a file on the way, found further up.
      if (!['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
    if (stat) {
      if (!stat.isDirectory()) {
        const what = at === abs ? 'is a file' : `cannot be made: ${displayPath(at)} is a file`;
        throw new UserError(`${where}: ${displayPath(abs)} ${what}, not a folder; name a folder (it is created when missing)`);
      }
      try {
        fs.accessSync(at, fs.constants.W_OK | fs.constants.X_OK);
      } catch {
        throw new UserError(`${where}: cannot write in ${displayPath(at)} (permission denied); name a folder you can write to`);
      }
      return;
    }
    const up = path.dirname(at);
    if (up === at) return;
    at = up;
  }
}

/** Checks, before any work, that `file` can be written: not a folder, in a folder that is or can be made. */
export function checkOutputFile(file: string, where: string): void {
  const abs = path.resolve(file);
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) throw new UserError(`${where}: ${displayPath(abs)} is a folder; name the file to write`);
  checkOutputFolder(path.dirname(abs), where);
}
