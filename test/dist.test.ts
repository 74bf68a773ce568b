// dist/ is what GitHub runs (actions do not build): it must be exactly what `npm run build`
// makes from the current sources. Rebuilding into a temporary folder must give the same bytes.
import * as fs from 'fs';
import * as path from 'path';
import { ROOT, bundleInto } from './helpers/run-cli';

test('dist/ matches a fresh build byte for byte', () => {
  const fresh = bundleInto('dist-check');
  try {
    const dist = path.join(ROOT, 'dist');
    const built = fs.readdirSync(fresh).sort();
    const committed = fs.existsSync(dist) ? fs.readdirSync(dist).sort() : [];
    expect(built).toEqual(expect.arrayContaining(['cli.js', 'index.js']));
    const stale = [
      ...built.filter((f) => !committed.includes(f) || !fs.readFileSync(path.join(dist, f)).equals(fs.readFileSync(path.join(fresh, f)))),
      ...committed.filter((f) => !built.includes(f)),
    ];
    if (stale.length) throw new Error(`dist/ is stale: run npm run build (differs: ${stale.join(', ')})`);
  } finally {
    fs.rmSync(fresh, { recursive: true, force: true });
  }
});

test('the bundle is reproducible: two builds are identical', () => {
  const a = bundleInto('repro-a');
  const b = bundleInto('repro-b');
  try {
    for (const f of fs.readdirSync(a)) expect(fs.readFileSync(path.join(b, f)).equals(fs.readFileSync(path.join(a, f)))).toBe(true);
    // No absolute paths of this machine end up in the output.
    for (const f of fs.readdirSync(a)) expect(fs.readFileSync(path.join(a, f), 'utf8')).not.toContain(ROOT);
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});
