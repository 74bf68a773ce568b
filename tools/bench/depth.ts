// `npm run bench -- depth`: width, depth and mixed pruning side by side at 25 % and 40 % of the
// parameters, prune-gate's defaults otherwise (activation importance, measured allocation and
// compensation, calibration loss as the damage measure). Quality on the trained LLaMA fixture
// (test/fixtures/llama.onnx): held-out perplexity (bench/heldout/llama) and MACs over the base's.
// Decode speed on the LLaMA fixture with a KV cache (test/fixtures/kv/llama-kv.onnx, same
// architecture, untrained): the same three methods at the same ratios, tokens per second at batch
// 1 on the cache over the base's (base and candidate timed alternately, src/eval/decode-speed.ts).
// Prints JSON lines (one per row) on stdout.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CalibrationSet, calibrationFeeds, loadCalibration, readCalibration } from '../../src/eval/calibration';
import { measureDecodeSpeed } from '../../src/eval/decode-speed';
import { Evaluator } from '../../src/eval/evaluator';
import { loadGenerationSpec } from '../../src/eval/generation-set';
import { encodeNpy } from '../../src/eval/npy';
import { measureMacs } from '../../src/graph/cost';
import { OnnxModel } from '../../src/onnx/model';
import { createSession } from '../../src/onnx/runtime';
import { PruneOptions, Structure, pruneModel } from '../../src/prune';

const ROOT = path.resolve(__dirname, '..', '..');
const KV_DIR = path.join(ROOT, 'test', 'fixtures', 'kv');

const METHODS: { label: string; structures: Structure[] }[] = [
  { label: 'width', structures: ['ffn', 'heads'] },
  { label: 'depth', structures: ['blocks'] },
  { label: 'mixed', structures: ['blocks', 'ffn', 'heads'] },
];
const RATIOS = [0.25, 0.4];

/** prune-gate's defaults with a damage measure (as the quality bench's prune-gate row), the structures asked. */
function options(structures: Structure[], ratio: number, calibration: CalibrationSet, damage: PruneOptions['damage']): PruneOptions {
  return { target: ratio, structures, importance: 'activation', compensate: 'auto', allocation: 'auto', align: 'auto', damage, calibration: calibrationFeeds(calibration), calibrationSamples: calibration.count };
}

/** The trained LLaMAs: the 2-layer fixture, and the 4-layer example (examples/fortunes-llama), whose depth has more to give. */
const LLAMAS = [
  { name: 'llama', model: 'test/fixtures/llama.onnx', calibration: 'calibration/llama', heldOut: 'bench/heldout/llama' },
  { name: 'fortunes-llama', model: 'examples/fortunes-llama/model.onnx', calibration: 'calibration/fortunes-llama', heldOut: 'examples/fortunes-llama/heldout' },
];

async function quality(name: string): Promise<void> {
  const files = LLAMAS.find((l) => l.name === name)!;
  const base = OnnxModel.read(path.join(ROOT, files.model));
  const calibration = loadCalibration(path.join(ROOT, files.calibration), base);
  const heldOut = loadCalibration(path.join(ROOT, files.heldOut), base);
  const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 0, runs: 1 } });
  const onCalibration = await Evaluator.create(base, calibration, { latency: { warmup: 0, runs: 1 } });
  const baseMacs = (await measureMacs(base)).total;
  try {
    console.log(JSON.stringify({ part: 'quality', name, method: 'base', ratio: 0, perplexity: evaluator.baseTask.perplexity, samples: heldOut.count }));
    for (const ratio of RATIOS) {
      for (const m of METHODS) {
        const started = Date.now();
        const result = await pruneModel(base, options(m.structures, ratio, calibration, onCalibration.damageMeasure()));
        const seconds = (Date.now() - started) / 1000;
        const values = (await evaluator.evaluate(result.model)).values.candidate;
        const row = {
          part: 'quality',
          name,
          method: m.label,
          ratio,
          removed: 1 - result.paramsAfter / result.paramsBefore,
          params: result.paramsBefore,
          perplexity: values.perplexity,
          kl: values['kl-divergence'],
          macs: (await measureMacs(result.model)).total / baseMacs,
          blocks: result.pruned.filter((p) => p.kind === 'blocks').map((p) => p.where.split(' ')[0]),
          tried: result.depth?.tried,
          influence: result.depth?.blocks.map((b) => ({ where: b.where.split(' ')[0], influence: b.influence })),
          seconds,
        };
        console.log(JSON.stringify(row));
      }
    }
  } finally {
    await evaluator.close();
    await onCalibration.close();
  }
}

/** Random token windows for the untrained KV fixture (its vocabulary is 64; 0 is padding): what its pruning is calibrated on. */
function kvCalibration(dir: string): string {
  const ids = new BigInt64Array(32 * 16);
  let seed = 12345;
  for (let i = 0; i < ids.length; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    ids[i] = BigInt(1 + (seed % 63));
  }
  const mask = new BigInt64Array(ids.length).fill(1n);
  const positions = BigInt64Array.from({ length: ids.length }, (_, i) => BigInt(i % 16));
  const inputs = { input_ids: ids, attention_mask: mask, position_ids: positions };
  for (const [name, data] of Object.entries(inputs)) fs.writeFileSync(path.join(dir, `${name}.npy`), encodeNpy({ dtype: 7, dims: [32, 16], data }));
  const files = Object.fromEntries(Object.keys(inputs).map((name) => [name, `${name}.npy`]));
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'language-model', inputs: files, output: 'logits', batch_size: 16 }));
  return dir;
}

async function decode(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-depth-'));
  try {
    const base = OnnxModel.read(path.join(KV_DIR, 'llama-kv.onnx'));
    const calibration = await readCalibration(kvCalibration(tmp), base);
    const onCalibration = await Evaluator.create(base, calibration, { latency: { warmup: 0, runs: 1 } });
    const reference = JSON.parse(fs.readFileSync(path.join(KV_DIR, 'llama-kv.json'), 'utf8')) as { prompts: number[][] };
    fs.writeFileSync(path.join(tmp, 'prompts.jsonl'), reference.prompts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
    const specFile = path.join(tmp, 'generation.json');
    fs.writeFileSync(specFile, '{}');
    const spec = loadGenerationSpec({ samples: 'prompts.jsonl', 'max-new-tokens': 32 }, specFile, base);
    // The longest prompt, then 31 steps of one token each on the cache.
    const prompt = [...reference.prompts].sort((a, b) => b.length - a.length)[0];
    const input = { decoder: spec.decoder, prompt, tokens: Array.from({ length: 31 }, (_, i) => 1 + ((i * 7) % 63)) };
    const baseSession = await createSession(base);
    const baseMacs = (await measureMacs(base)).total;
    try {
      for (const ratio of RATIOS) {
        for (const m of METHODS) {
          const result = await pruneModel(base, options(m.structures, ratio, calibration, onCalibration.damageMeasure()));
          const session = await createSession(result.model);
          try {
            const d = await measureDecodeSpeed(baseSession, session, input, { warmup: 5, time: 8, noise: 0.03 });
            console.log(
              JSON.stringify({
                part: 'decode',
                method: m.label,
                ratio,
                removed: 1 - result.paramsAfter / result.paramsBefore,
                cache: d.cache,
                baseTokensPerSecond: 1000 / d.decode.base.p50_ms,
                tokensPerSecond: 1000 / d.decode.candidate.p50_ms,
                speedup: d.decode.speedup,
                interval: d.decode.intervals?.p50.speedup ?? null,
                firstTokenSpeedup: d.firstToken.speedup,
                macs: (await measureMacs(result.model)).total / baseMacs,
                blocks: result.pruned.filter((p) => p.kind === 'blocks').map((p) => p.where.split(' ')[0]),
              }),
            );
          } finally {
            await session.release();
          }
        }
      }
    } finally {
      await baseSession.release();
      await onCalibration.close();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function main() {
  const parts = process.argv.slice(2);
  for (const l of LLAMAS) if (parts.length === 0 || parts.includes(l.name)) await quality(l.name);
  if (parts.length === 0 || parts.includes('decode')) await decode();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
