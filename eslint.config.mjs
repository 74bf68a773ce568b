// `npm run lint`, first half: the layers of src/ (docs/architecture.md). Unused exports: knip.json.
import importX, { createNodeResolver } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/**
 * The layers, bottom to top. A module may import from its own layer and from the layers below,
 * never from a layer above. Two pairs share a layer without importing each other: prune and
 * quantize; cli and github, except that the command line reads the pull request of the run it
 * is in through src/github/event.ts.
 */
const LAYERS = [
  ['src/util', 'src/errors.ts'],
  ['src/onnx'],
  ['src/graph'],
  ['src/prune', 'src/quantize'],
  ['src/eval'],
  ['src/gate'],
  ['src/report'],
  ['src/config'],
  ['src/pipeline'],
  ['src/cli', 'src/github'],
  ['src/main.ts', 'src/index.ts'],
];
const APART = [
  ['src/prune', 'src/quantize', []],
  ['src/quantize', 'src/prune', []],
  ['src/github', 'src/cli', []],
  ['src/cli', 'src/github', ['**/event.ts']],
];

const glob = (p) => `./${p}${p.endsWith('.ts') ? '' : '/**'}`;
const zones = [];
for (const [i, layer] of LAYERS.entries()) {
  for (const target of layer) {
    for (const [j, above] of LAYERS.entries()) {
      if (j <= i) continue;
      for (const from of above) {
        zones.push({ target: glob(target), from: glob(from), message: `${target} (layer ${i + 1}) must not import ${from} (layer ${j + 1}); see docs/architecture.md` });
      }
    }
  }
}
for (const [target, from, except] of APART) {
  zones.push({ target: glob(target), from: glob(from), except, message: `${target} and ${from} share a layer and stay apart; see docs/architecture.md` });
}

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'coverage/**', 'bench/**', '**/*.js', '**/*.mjs'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'tools/**/*.ts'],
    languageOptions: { parser: tseslint.parser, parserOptions: { sourceType: 'module' } },
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json', '.node'] })] },
    rules: {
      'import-x/no-restricted-paths': ['error', { zones }],
    },
  },
);
