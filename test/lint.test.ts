// The layer rule of `npm run lint` is live: an upward import planted in a lower layer fails it,
// and the same import from a higher layer passes (docs/architecture.md).
import { spawnSync } from 'child_process';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..');

function lint(file: string, text: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'eslint', 'bin', 'eslint.js'), '--stdin', '--stdin-filename', file], {
    cwd: ROOT,
    input: text,
    encoding: 'utf8',
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('an upward import fails the lint, naming both layers', () => {
  const r = lint('src/graph/planted.ts', "import { renderMarkdown } from '../report/markdown';\nexport const planted = renderMarkdown;\n");
  expect(r.status).toBe(1);
  expect(r.out).toContain('src/graph (layer 3) must not import src/report (layer 7)');
});

test('the same import from a higher layer passes', () => {
  const r = lint('src/pipeline/planted.ts', "import { renderMarkdown } from '../report/markdown';\nexport const planted = renderMarkdown;\n");
  expect(r.out).toBe('');
  expect(r.status).toBe(0);
});

test('prune and quantize share a layer and stay apart', () => {
  const r = lint('src/quantize/planted.ts', "import { pruneModel } from '../prune';\nexport const planted = pruneModel;\n");
  expect(r.status).toBe(1);
  expect(r.out).toContain('src/quantize and src/prune share a layer and stay apart');
});
