// Bundles the action (src/index.ts -> dist/index.js) and the CLI (src/cli/main.ts -> dist/cli.js)
// with esbuild. The output must be byte-for-byte reproducible: test/dist.test.ts rebuilds into a
// temporary folder and compares, so a stale dist/ fails the tests.
//
//   node tools/bundle.mjs [--outdir DIR]     (default: dist/)
import * as esbuild from 'esbuild';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const ENTRIES = { index: 'src/index.ts', cli: 'src/cli/main.ts' };

export async function bundle(outdir) {
  for (const [name, entry] of Object.entries(ENTRIES)) {
    await esbuild.build({
      // Paths in the output's comments are relative to this folder, whatever the current one is.
      absWorkingDir: root,
      entryPoints: [entry],
      outfile: path.resolve(outdir, `${name}.js`),
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      // onnxruntime-node loads its native library by a computed path, which a bundler cannot
      // follow: it is required from node_modules at run time (docs/action.md says how the action
      // gets it).
      external: ['onnxruntime-node'],
      legalComments: 'none',
      sourcemap: false,
      minify: false,
      charset: 'utf8',
      logLevel: 'warning',
      logOverride: {
        // protobufjs and @actions deps use `require` dynamically on purpose; not our problem.
        'indirect-require': 'silent',
      },
    });
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const i = process.argv.indexOf('--outdir');
  const outdir = i > 0 ? path.resolve(process.argv[i + 1]) : path.join(root, 'dist');
  bundle(outdir).catch((e) => {
    console.error(e.message ?? e);
    process.exit(1);
  });
}
