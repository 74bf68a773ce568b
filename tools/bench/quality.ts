// `npm run bench -- quality`: held-out quality of each trained fixture at 20, 40 and 50 % of the
// parameters removed, prune-gate's defaults (calibration data given, nothing else) against the
// baselines on the same data: magnitude pruning, FLAP (fluctuation, one global standardized
// ranking, bias compensation), SlimGPT (layer-wise OBS, tools/bench/slimgpt.ts), uniform
// per-layer and FFN-only allocations. For prune-gate's
// result also the latency over the base's (median of 21 alternated runs, 2 threads, batch 1 and
// 16) beside its MACs over the base's. Prints JSON lines (one per row) on stdout.
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { measureLatency } from '../../src/eval/latency';
import { measureMacs } from '../../src/graph/cost';
import { OnnxModel } from '../../src/onnx/model';
import { createSession, dummyFeeds } from '../../src/onnx/runtime';
import { PruneOptions, pruneModel } from '../../src/prune';
import { slimgptPrune } from './slimgpt';
import { damageTracking } from './tracking';

const ROOT = path.resolve(__dirname, '..', '..');

const METHODS: { label: string; options: Partial<PruneOptions>; measured?: boolean; slimgpt?: boolean }[] = [
  { label: 'magnitude', options: { importance: 'magnitude', compensate: 'none', allocation: 'global', align: 1 } },
  { label: 'FLAP', options: { importance: 'activation', compensate: 'bias', allocation: 'global', align: 1 } },
  { label: 'SlimGPT', options: {}, slimgpt: true },
  { label: 'uniform', options: { importance: 'activation', compensate: 'bias', allocation: 'uniform', align: 1 } },
  { label: 'FFN-only', options: { importance: 'activation', compensate: 'bias', allocation: 'ffn-only', align: 1 } },
  { label: 'prune-gate', options: { importance: 'activation', allocation: 'auto', align: 'auto' }, measured: true },
];

async function main() {
  // `-- quality gpt2 --ratios 0.5 --methods SlimGPT,prune-gate`: one corner of the table.
  const args = process.argv.slice(2);
  const option = (flag: string) => {
    const at = args.indexOf(flag);
    return at >= 0 ? args.splice(at, 2)[1] : undefined;
  };
  const ratios = (option('--ratios') ?? '0.2,0.4,0.5').split(',').map(Number);
  const only = option('--methods')?.split(',');
  const methods = only ? METHODS.filter((m) => only.includes(m.label)) : METHODS;
  const names = args.length ? args : ['gpt2', 'llama', 'bert', 'cnn', 'mlp'];
  for (const name of names) {
    const base = OnnxModel.read(path.join(ROOT, 'test', 'fixtures', `${name}.onnx`));
    const calibration = loadCalibration(path.join(ROOT, 'calibration', name), base);
    const heldOut = loadCalibration(path.join(ROOT, 'bench', 'heldout', name), base);
    const metric = calibration.task === 'language-model' ? 'perplexity' : 'accuracy';
    const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 0, runs: 1 } });
    const onCalibration = await Evaluator.create(base, calibration, { latency: { warmup: 0, runs: 1 } });
    const damage = onCalibration.damageMeasure();
    const baseSession = await createSession(base);
    const baseMacs = (await measureMacs(base)).total;
    try {
      console.log(JSON.stringify({ name, metric, ratio: 0, method: 'base', value: evaluator.baseTask[metric], samples: heldOut.count }));
      for (const ratio of ratios) {
        for (const m of methods) {
          const started = Date.now();
          const structures: PruneOptions['structures'] = ['ffn', 'heads', 'channels'];
          const result = m.slimgpt ? await slimgptPrune(base, ratio, structures, calibrationFeeds(calibration)) : await pruneModel(base, {
            target: ratio,
            structures,
            compensate: 'auto',
            calibration: calibrationFeeds(calibration),
            calibrationSamples: calibration.count,
            ...(m.measured ? { damage } : {}),
            ...m.options,
          } as PruneOptions);
          const seconds = (Date.now() - started) / 1000;
          const values = (await evaluator.evaluate(result.model)).values.candidate;
          const removed = 1 - result.paramsAfter / result.paramsBefore;
          const asked = m.options.allocation;
          // FFN-only where the FFN cannot hold the target (or is the only kind) falls back to global: not a baseline there.
          const applicable = !asked || asked === 'auto' || ('allocation' in result && result.allocation?.strategy === asked);
          const row: Record<string, unknown> = { name, metric, ratio, method: m.label, value: values[metric], kl: values['kl-divergence'], removed, applicable, seconds };
          if ('layers' in result) row.layers = result.layers.map((l) => `${l.kind} ${l.before}-${l.removed}${l.consumers ? '' : ' (unmeasured)'}`);
          if (m.measured && 'allocation' in result) {
            row.allocation = result.allocation;
            row.passes = result.passes?.map((p) => p.what);
            const session = await createSession(result.model);
            try {
              for (const batch of [1, 16]) {
                const feeds = dummyFeeds(base, batch, 32);
                const l = await measureLatency(baseSession, session, feeds, { warmup: 10, runs: 21 });
                row[`latencyB${batch}`] = l.candidate.p50_ms / l.base.p50_ms;
              }
            } finally {
              await session.release();
            }
            const macs = (await measureMacs(result.model)).total;
            row.macs = macs / baseMacs;
          }
          console.log(JSON.stringify(row));
        }
      }
      // Does the closed form track the damage it stands for (tools/bench/tracking.ts)?
      if (only || ratios.length < 3) continue;
      const tracked = await damageTracking(name);
      console.log(JSON.stringify({ name, metric, method: 'tracking', spearman: tracked.spearman, points: tracked.points }));
    } finally {
      await evaluator.close();
      await onCalibration.close();
      await baseSession.release();
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
