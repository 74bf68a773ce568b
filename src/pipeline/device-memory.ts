import { UserError } from '../errors';
import type { CalibrationSet } from '../eval/calibration';
import { measureFormGap } from '../eval/form-gap';
import { OnnxModel } from '../onnx/model';
import { withSessionForm } from '../onnx/runtime';
import { EVAL_FORM_BITS, EVAL_FORM_BLOCK, Int8Form, heldWeightBytes } from '../quantize/eval-form';
import type { ReportEvaluationForm } from '../report/schema';
import type { CompensationChoice } from '../prune/types';
import { displayPath } from '../util/paths';

/**
 * The share of `device.memory` a model's weights may take as onnxruntime holds them: the rest is
 * for the batch's activations, onnxruntime's own structures, the Node.js process, the base's
 * outputs kept for the comparisons and a candidate being pruned (docs/contracts.md, "The target
 * device").
 */
export const WEIGHT_SHARE = 0.75;
/** The base's outputs the evaluator keeps (so its session is let go while candidates run): up to this share of device.memory. */
const OUTPUTS_SHARE = 0.1;
/** The evaluator keeps this much in any case (its default). */
const KEPT_OUTPUTS_FLOOR = 256 * 2 ** 20;
/** The float pieces the gap (and the quantizer's layer errors) are measured with hold at most this share of device.memory in weights each. */
const PIECE_SHARE = 0.3;

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

/**
 * Runs `fn` (the gate's evaluation and search) on `base` within `memory` bytes: as the model is
 * written when its weights fit WEIGHT_SHARE of it, else with every session in the weight-only
 * int8 form (quantize/eval-form.ts), after measuring that form's gap to float on the set's first
 * batch. `fn` gets the report's account of the form (undefined when the model ran as written)
 * and how many bytes of base outputs the evaluator may keep.
 */
export async function withDeviceMemory<R>(
  base: OnnxModel,
  set: CalibrationSet,
  memory: number,
  compensate: CompensationChoice,
  log: (line: string) => void,
  fn: (device: { form?: ReportEvaluationForm; outputBytes?: number; compensate: CompensationChoice; pieceBytes?: number }) => Promise<R>,
): Promise<R> {
  const need = heldWeightBytes(base);
  const allowed = WEIGHT_SHARE * memory;
  const name = displayPath(base.origin || base.path);
  const fits = need <= allowed;
  const formNeed = fits ? need : heldWeightBytes(base, true);
  const chosen = compensationThatFits(base, compensate, formNeed, allowed, memory, name, log);
  if (fits) return fn({ compensate: chosen });
  if (formNeed > allowed) {
    throw new UserError(
      `${name}: its weights need ${gib(need)} as onnxruntime holds them and ${gib(formNeed)} even in int8, more than ${Math.round(WEIGHT_SHARE * 100)} % of device.memory (${gib(memory)}): give the gate a machine with more memory and set device.memory to it`,
    );
  }
  log(`${name} needs ${gib(need)} of weights as onnxruntime holds them, more than ${Math.round(WEIGHT_SHARE * 100)} % of device.memory (${gib(memory)}): evaluating it and collecting statistics in a weight-only int8 form (MatMulNBits, ${EVAL_FORM_BITS} bits, block ${EVAL_FORM_BLOCK}; ${gib(formNeed)}), made on the fly; the pruned model is written from the float weights`);
  const form = new Int8Form();
  const apply = form.apply.bind(form);
  try {
    log(`measuring the int8 form's gap to float on the first ${set.batchSize} samples (the float model run one piece at a time)`);
    const gap = await measureFormGap(base, set, apply, PIECE_SHARE * memory, log);
    const metric = Object.keys(gap.float)[0];
    log(
      `the int8 form against float on ${gap.samples} samples: agreement ${(gap.agreement * 100).toFixed(2)} %, KL divergence ${gap.klDivergence.toPrecision(3)}${metric ? `, ${metric} ${fmt(gap.float[metric as keyof typeof gap.float])} (float) and ${fmt(gap.form[metric as keyof typeof gap.form])} (int8)` : ''} (${gap.seconds.toFixed(0)} s)`,
    );
    const report: ReportEvaluationForm = {
      form: 'int8',
      reason: `the model's weights need ${gib(need)} as onnxruntime holds them, more than ${Math.round(WEIGHT_SHARE * 100)} % of device.memory (${gib(memory)})`,
      device_memory_bytes: memory,
      model_bytes: need,
      form_bytes: formNeed,
      bits: EVAL_FORM_BITS,
      block_size: EVAL_FORM_BLOCK,
      gap: {
        samples: gap.samples,
        float: finite(gap.float),
        int8: finite(gap.form),
        agreement: Number.isFinite(gap.agreement) ? gap.agreement : null,
        kl_divergence: Number.isFinite(gap.klDivergence) ? gap.klDivergence : null,
        seconds: gap.seconds,
      },
    };
    return await withSessionForm(apply, () => fn({ form: report, outputBytes: Math.max(KEPT_OUTPUTS_FLOOR, Math.floor(OUTPUTS_SHARE * memory)), compensate: chosen, pieceBytes: PIECE_SHARE * memory }));
  } finally {
    form.close(); // its data files go now, not only when the process exits
  }
}

/**
 * An upper bound of the bytes reconstruction's statistics hold: the covariance of every MatMul
 * or Gemm input that reads a weight (each input once, float32, twice: all batches and every
 * other one, stats.ts), K² values each. A 7B LLaMA's 32 layers: about 44 GB.
 */
export function covarianceBytes(model: OnnxModel): number {
  const inputs = new Map<string, number>();
  for (const n of model.graph.node) {
    if ((n.opType !== 'MatMul' && n.opType !== 'Gemm') || (n.domain ?? '') !== '') continue;
    const [a, b] = n.input ?? [];
    if (!a || !b) continue;
    const producer = model.graph.node.find((p) => p.output?.[0] === b && p.opType === 'Cast');
    const weight = model.constantInfo(b) ?? (producer?.input?.[0] ? model.constantInfo(producer.input[0]) : undefined);
    if (!weight || weight.dims.length !== 2 || model.isConstant(a)) continue;
    const k = n.opType === 'Gemm' && n.attribute?.some((x) => x.name === 'transB' && Number(x.i) === 1) ? weight.dims[1] : weight.dims[0];
    inputs.set(a, k);
  }
  return [...inputs.values()].reduce((t, k) => t + k * k * 4 * 2, 0);
}

/**
 * The compensation the run can afford: reconstruction's covariances must fit beside the weights
 * in WEIGHT_SHARE of device.memory. `auto` falls back to bias, said in one line; `reconstruct`
 * asked for and not affordable is refused.
 */
function compensationThatFits(model: OnnxModel, asked: CompensationChoice, weights: number, allowed: number, memory: number, name: string, log: (line: string) => void): CompensationChoice {
  if (asked !== 'auto' && asked !== 'reconstruct') return asked;
  const covariances = covarianceBytes(model);
  if (weights + covariances <= allowed) return asked;
  const why = `reconstruction's covariances of ${name} need up to ${gib(covariances)}, which with its weights (${gib(weights)}) is more than ${Math.round(WEIGHT_SHARE * 100)} % of device.memory (${gib(memory)})`;
  if (asked === 'reconstruct') throw new UserError(`prune.compensate: reconstruct: ${why}; use compensate: bias, or a larger device.memory on a machine that has it`);
  log(`compensation bias: ${why}`);
  return 'bias';
}

const fmt = (v: number | undefined) => (v === undefined ? '?' : v.toPrecision(4));

function finite(values: Record<string, number | undefined>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).filter((e): e is [string, number] => Number.isFinite(e[1])));
}
