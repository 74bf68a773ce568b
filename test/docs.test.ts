// The documentation holds together: the README stays a front door (at most 20 KB), every
// relative link resolves, and every table the bench writes is filled and backed by its raw
// results (docs/measured.md).
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..');
const DOCS = path.join(ROOT, 'docs');
const pages = [
  path.join(ROOT, 'README.md'),
  ...fs.readdirSync(DOCS).filter((f) => f.endsWith('.md')).map((f) => path.join(DOCS, f)),
  ...fs.readdirSync(path.join(ROOT, 'examples')).map((d) => path.join(ROOT, 'examples', d, 'README.md')),
].filter((f) => fs.existsSync(f));

test('the README is at most 20 KB', () => {
  expect(fs.statSync(path.join(ROOT, 'README.md')).size).toBeLessThanOrEqual(20 * 1024);
});

test.each(pages.map((p) => [path.relative(ROOT, p), p]))('%s: every relative link resolves', (_name, page) => {
  const text = fs.readFileSync(page, 'utf8');
  const links = [...text.matchAll(/\]\(([^)#\s]+)(#[^)\s]*)?\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
  for (const link of links) expect([link, fs.existsSync(path.resolve(path.dirname(page), link))]).toEqual([link, true]);
});

test('every bench table is filled, with its command and raw results', () => {
  const blocks = pages.flatMap((page) => {
    const text = fs.readFileSync(page, 'utf8');
    return [...text.matchAll(/<!-- bench:([\w-]+) -->\n([\s\S]*?)<!-- \/bench:\1 -->/g)].map((m) => ({ page, name: m[1], body: m[2] }));
  });
  expect(blocks.length).toBeGreaterThanOrEqual(10);
  for (const { page, name, body } of blocks) {
    const note = /^_Measured by `npm run bench -- ([\w-]+)` at commit [0-9a-f]{7}.*raw results: \[[\w.-]+\]\(([^)]+)\)\._$/m.exec(body);
    expect([name, note !== null]).toEqual([name, true]);
    const results = JSON.parse(fs.readFileSync(path.resolve(path.dirname(page), note![2]), 'utf8'));
    expect(results.section).toBe(note![1]);
    expect(results.rows.length).toBeGreaterThan(0);
    expect(body.split('\n').filter((l) => l.startsWith('|')).length + body.split('\n').filter((l) => l.startsWith('- ')).length).toBeGreaterThan(0);
  }
});
