// `npm run check-dist`: dist/ (what GitHub runs: actions are not built on the runner) must be
// exactly what `npm run build` makes from the sources. Builds into a temporary folder and
// compares byte for byte; names every file that differs and exits 1 when any does.
//   node tools/check-dist.mjs [--dist DIR]     (default: dist/)
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fileURLToPath } from 'url';
import { bundle } from './bundle.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const i = process.argv.indexOf('--dist');
const dist = i > 0 ? path.resolve(process.argv[i + 1]) : path.join(root, 'dist');
const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-check-dist-'));
try {
  await bundle(fresh);
  const built = fs.readdirSync(fresh).sort();
  const committed = fs.existsSync(dist) ? fs.readdirSync(dist).sort() : [];
  const same = (f) => committed.includes(f) && fs.readFileSync(path.join(dist, f)).equals(fs.readFileSync(path.join(fresh, f)));
  const stale = [...built.filter((f) => !same(f)), ...committed.filter((f) => !built.includes(f))];
  if (stale.length) {
    console.error(`${path.relative(root, dist) || dist}/ is not what the sources build (differs: ${stale.join(', ')}): run npm run build and commit dist/`);
    process.exitCode = 1;
  } else {
    console.log(`${path.relative(root, dist) || dist}/ is current (${built.join(', ')})`);
  }
} finally {
  fs.rmSync(fresh, { recursive: true, force: true });
}
