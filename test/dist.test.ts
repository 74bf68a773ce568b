// dist/ is what GitHub runs (actions do not build): it must be exactly what `npm run build`
// makes from the current sources. Rebuilding into a temporary folder must give the same bytes.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ROOT, bundleInto } from './helpers/run-cli';

test('check-dist (the CI job) passes on dist/ and names the file of a stale copy', () => {
  const check = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'tools', 'check-dist.mjs'), ...args], { cwd: ROOT, encoding: 'utf8' });
  const current = check([]);
  expect([current.status, current.stderr]).toEqual([0, '']);
  expect(current.stdout).toMatch(/^dist\/ is current \(.*cli\.js.*index\.js/);
  const stale = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-stale-dist-'));
  try {
    for (const f of fs.readdirSync(path.join(ROOT, 'dist'))) fs.copyFileSync(path.join(ROOT, 'dist', f), path.join(stale, f));
    fs.appendFileSync(path.join(stale, 'index.js'), '\n// an edit made by hand\n');
    const r = check(['--dist', stale]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/is not what the sources build \(differs: index\.js\): run npm run build and commit dist\//);
  } finally {
    fs.rmSync(stale, { recursive: true, force: true });
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
