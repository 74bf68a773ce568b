// `npm run docs:action`: the action's inputs and outputs in the docs, generated from action.yml
// so they cannot drift (test/docs-action.test.ts fails when a table differs from it). The README
// lists every input with its default and every output with its meaning, tersely (it is capped
// at 20 KB); docs/action.md gives every input's whole description. Each table sits between
// `<!-- action:NAME -->` and `<!-- /action:NAME -->`.
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';

const ROOT = path.resolve(__dirname, '..');

interface ActionYml {
  inputs: Record<string, { description: string; default?: string }>;
  outputs: Record<string, { description: string }>;
}

/** The generated files, each with the tables it holds. */
export const GENERATED: Record<string, string[]> = {
  'README.md': ['readme-inputs', 'outputs'],
  'docs/action.md': ['inputs', 'outputs'],
};

const cell = (s: string): string => s.replace(/\s+/g, ' ').trim().replace(/\|/g, '\\|');
const code = (s: string | undefined): string => (s === undefined || s === '' ? '' : `\`${s}\``);

/** The tables action.yml makes, by name. */
export function actionTables(yml: ActionYml): Record<string, string> {
  const inputs = Object.entries(yml.inputs);
  const outputs = Object.entries(yml.outputs);
  return {
    'readme-inputs': ['| input | default |', '| --- | --- |', ...inputs.map(([name, i]) => `| \`${name}\` | ${code(i.default)} |`)].join('\n'),
    inputs: ['| input | default | meaning |', '| --- | --- | --- |', ...inputs.map(([name, i]) => `| \`${name}\` | ${code(i.default)} | ${cell(i.description)} |`)].join('\n'),
    outputs: ['| output | meaning |', '| --- | --- |', ...outputs.map(([name, o]) => `| \`${name}\` | ${cell(o.description)} |`)].join('\n'),
  };
}

export function readActionYml(root = ROOT): ActionYml {
  return YAML.parse(fs.readFileSync(path.join(root, 'action.yml'), 'utf8')) as ActionYml;
}

/** `text` with each named table replaced by the generated one; throws when a marker is missing. */
export function withActionTables(text: string, names: string[], tables: Record<string, string>, file: string): string {
  let out = text;
  for (const name of names) {
    const re = new RegExp(`(<!-- action:${name} -->\\n)[\\s\\S]*?(<!-- /action:${name} -->)`);
    if (!re.test(out)) throw new Error(`${file}: no <!-- action:${name} --> ... <!-- /action:${name} --> block`);
    out = out.replace(re, (_m, open: string, close: string) => `${open}${tables[name]}\n${close}`);
  }
  return out;
}

if (require.main === module) {
  const tables = actionTables(readActionYml());
  for (const [file, names] of Object.entries(GENERATED)) {
    const full = path.join(ROOT, file);
    const before = fs.readFileSync(full, 'utf8');
    const after = withActionTables(before, names, tables, file);
    if (after !== before) fs.writeFileSync(full, after);
    console.log(`${file}: ${after === before ? 'up to date' : 'updated'}`);
  }
}
