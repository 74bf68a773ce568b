// `npm run bench`: the figures the issues ask for, measured on this machine. Sections:
//   quality  - held-out quality of each trained fixture at 20/40 % by importance/compensation (issue 4)
//   memory   - peak RSS of statistics collection as the number of calibration samples grows (issue 4)
//   quantization - size, latency and held-out perplexity: pruned, int8, int4, both (issue 8)
//   scale    - a generated LLaMA-7B-shaped model: prune speed and peak RSS (fp32, fp16), statistics
//              cost against plain inference, latency ratio against MAC ratio at 30 % (issue 9)
//   exporters - architectures outside the fixtures (MobileNetV2-like, U-Net, torch's
//              TransformerEncoder, a timm-style ViT, a GRU) at opsets 11/13/17: what is prunable,
//              and whether pruned + quantized models load with their output shapes
// Usage: npm run bench [-- quality memory quantization scale exporters]. Results go to stdout and bench/results.json.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const LARGE = path.join(ROOT, 'bench', 'large');
const results: Record<string, unknown> = {};

function child(script: string, args: string[]): Record<string, unknown>[] {
  const out = execFileSync(process.execPath, ['-r', 'ts-node/register/transpile-only', path.join(__dirname, script), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TS_NODE_PROJECT: path.join(ROOT, 'tsconfig.json') },
  });
  return out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
}

const fmt = (v: unknown, digits = 3) => (typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(digits)) : String(v));

function quality(): void {
  console.log('\n## Quality on held-out data (issue 4)\n');
  const rows = child('quality.ts', []);
  results.quality = rows;
  const methods = [...new Set(rows.filter((r) => r.method !== 'base').map((r) => r.method as string))];
  console.log(`| fixture | metric | base | removed | ${methods.join(' | ')} |`);
  console.log(`|---|---|---|---|${methods.map(() => '---').join('|')}|`);
  for (const name of [...new Set(rows.map((r) => r.name as string))]) {
    const base = rows.find((r) => r.name === name && r.method === 'base')!;
    for (const ratio of [0.2, 0.4]) {
      const cells = methods.map((m) => {
        const r = rows.find((x) => x.name === name && x.ratio === ratio && x.method === m)!;
        return `${fmt(r.value)} (KL ${fmt(r.kl, 2)})`;
      });
      console.log(`| ${name} | ${base.metric} | ${fmt(base.value)} | ${ratio * 100} % | ${cells.join(' | ')} |`);
    }
  }
}

function memory(): void {
  console.log('\n## Statistics collection: peak RSS against calibration samples (issue 4)\n');
  const model = path.join(ROOT, 'test', 'fixtures', 'gpt2.onnx');
  const rows = [4, 16, 64].map((batches) => child('child.ts', ['stats', model, String(batches), '16', '64', '256'])[0]);
  results.memory = rows;
  console.log('| samples (64 tokens) | seconds | peak RSS (MB) |\n|---|---|---|');
  for (const r of rows) console.log(`| ${r.samples} | ${fmt(r.seconds)} | ${fmt(r.peakRssMb)} |`);
}

function scale(): void {
  console.log('\n## Scale: LLaMA-7B layer shapes, 2 layers, external data (issue 9)\n');
  const fp32 = path.join(LARGE, 'llama7b-shape.onnx');
  const fp16 = path.join(LARGE, 'llama7b-shape-fp16.onnx');
  if (!fs.existsSync(fp16)) {
    console.log('generating the model with tools/bench/make_large.py (needs Debian python3-torch, python3-onnx)...');
    const r = spawnSync('/usr/bin/python3', [path.join(__dirname, 'make_large.py'), '--out', LARGE, '--layers', '2', '--fp16', '--reuse'], { stdio: 'inherit' });
    if (r.status !== 0) {
      console.log('skipped: the large model could not be generated');
      return;
    }
  }
  const prunedDir = path.join(LARGE, 'pruned');
  const prune = [fp32, fp16].map((f, i) => child('child.ts', ['prune', f, '0.3', i === 0 ? prunedDir : path.join(LARGE, 'pruned-fp16')])[0]);
  results.prune = prune;
  console.log('| model | weights (MB) | largest tensor (MB) | prune (s) | MB/s | prune + write (s) | MB/s | peak RSS (MB) | removed |\n|---|---|---|---|---|---|---|---|---|');
  for (const r of prune) {
    console.log(`| ${path.basename(r.file as string)} | ${fmt(r.weightsMb)} | ${fmt(r.largestMb)} | ${fmt(r.pruneSeconds)} | ${fmt(r.pruneMbPerSecond)} | ${fmt(r.seconds)} | ${fmt(r.mbPerSecond)} | ${fmt(r.peakRssMb)} | ${fmt(r.removed)} |`);
  }
  const plain = child('child.ts', ['infer', fp32, '2', '1', '64', '32000'])[0];
  const stats = child('child.ts', ['stats', fp32, '2', '1', '64', '32000'])[0];
  results.statsCost = { plain, stats, ratio: (stats.seconds as number) / (plain.seconds as number) };
  console.log(`\nStatistics collection against plain inference (2 x 64 tokens): ${fmt(stats.seconds)} s against ${fmt(plain.seconds)} s = ${fmt((stats.seconds as number) / (plain.seconds as number))}x`);
  const latency = child('child.ts', ['latency', fp32, path.join(prunedDir, 'pruned.onnx'), '256', '3'])[0];
  results.latency = latency;
  console.log(`Latency at 30 % removed, batch 1, 256 tokens: ${fmt(latency.prunedMs)} ms against ${fmt(latency.baseMs)} ms, ratio ${fmt(latency.latencyRatio)}; MAC ratio ${fmt(latency.macRatio)}; latency/MAC - 1 = ${fmt(((latency.gap as number) * 100))} %`);
}

function quantization(): void {
  console.log('\n## Pruning and quantization: size, latency, held-out perplexity (issue 8)\n');
  const example = path.join(ROOT, 'examples', 'fortunes-llama');
  const extra = fs.existsSync(path.join(example, 'model.onnx'))
    ? [path.join(example, 'model.onnx'), path.join(ROOT, 'calibration', 'fortunes-llama'), path.join(example, 'heldout')]
    : [];
  const fixtures = ['gpt2', 'llama'].flatMap((n) => [path.join(ROOT, 'test/fixtures', `${n}.onnx`), path.join(ROOT, 'calibration', n), path.join(ROOT, 'bench/heldout', n)]);
  const rows = child('quantize.ts', [...fixtures, ...(extra.length === 3 && fs.existsSync(extra[2]) ? extra : [])]);
  results.quantization = rows;
  console.log('| model | variant | bytes | smaller | smaller, names kept | held-out perplexity | agreement | speedup (calibration batch) |\n|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.model} | ${r.variant} | ${r.bytes} | ${r.sizeRatio ? `${fmt(r.sizeRatio)}x` : ''} | ${r.sizeRatioNamesKept ? `${fmt(r.sizeRatioNamesKept)}x` : ''} | ${fmt(r.perplexity)} | ${r.agreement === undefined ? '' : fmt(r.agreement)} | ${r.speedup ? `${fmt(r.speedup)}x` : ''} |`);
  }
}

function exporters(): void {
  console.log('\n## Architectures outside the fixtures, three opsets: prunable share, and prune + quantize round trips\n');
  const dir = path.join(ROOT, 'bench', 'sweep');
  if (!fs.existsSync(dir) || fs.readdirSync(dir).length === 0) {
    console.log('exporting them with tools/bench/export_sweep.py (needs Debian python3-torch, python3-onnx)...');
    // torch's exporter warns at length on stderr: shown only if it fails.
    const r = spawnSync('/usr/bin/python3', [path.join(__dirname, 'export_sweep.py'), '--out', dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) {
      console.log(`skipped: the models could not be exported\n${(r.stderr ?? '').split('\n').slice(-5).join('\n')}`);
      return;
    }
  }
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.onnx')).sort().map((f) => path.join(dir, f));
  const rows = child('exporters.ts', files);
  results.exporters = rows;
  console.log('| model | params | in prunable weights | kinds | removed at 30 % | pruned | + int8 | + int4 |\n|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (r.error) console.log(`| ${r.model} | error: ${r.error} |  |  |  |  |  |  |`);
    else console.log(`| ${r.model} | ${r.params} | ${fmt((r.prunableShare as number) * 100)} % | ${r.groups} | ${fmt((r.removed as number) * 100)} % | ${r.pruned} | ${r.int8} | ${r.int4} |`);
  }
}

const sections: Record<string, () => void> = { quality, memory, quantization, scale, exporters };
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(sections);
console.log(`# prune-gate benchmark (${new Date().toISOString().slice(0, 10)}, ${require('os').cpus().length} cores, load ${require('os').loadavg()[0].toFixed(1)})`);
for (const name of wanted) {
  if (!sections[name]) throw new Error(`unknown section ${name}: choose from ${Object.keys(sections).join(', ')}`);
  sections[name]();
}
fs.writeFileSync(path.join(ROOT, 'bench', 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
