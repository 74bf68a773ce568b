/**
 * `method: gptq | auto`: every MatMulNBits layer also quantized by GPTQ (./gptq.ts) from its
 * inputs' Hessian (./hessian.ts, one pass over the calibration set), both forms' output errors
 * measured on the calibration data in one pass (./calibration.ts), and each layer stored in the
 * form asked (gptq) or with the lower error (auto). What was chosen, and the calibration error of
 * the choice against round-to-nearest's, goes to the report.
 */
import { OnnxModel } from '../onnx/model';
import type { Feeds } from '../onnx/runtime';
import { formatError, measureCandidates } from './calibration';
import { Candidate } from './formats';
import { HessianRequest, collectHessians } from './hessian';
import { CheckedOptions, QuantizeMethod } from './options';
import { GPTQ_DAMPINGS } from './gptq';

/**
 * GPTQ runs in JavaScript and holds each distinct input's Hessian (and its half) in float64 at
 * once: layers past these bounds, in graph order, keep round-to-nearest's codes (the report counts
 * them, and the log says why). About a minute of arithmetic and 256 MiB: a GPT-2-small-sized model
 * fits whole; a 7B model's first few layers would.
 */
export const GPTQ_MAX_HESSIAN_BYTES = 256 * 2 ** 20;
export const GPTQ_MAX_WORK = 4e10;

export interface MethodChoice {
  /** The method asked. */
  asked: QuantizeMethod;
  /**
   * MatMulNBits layers, and those stored with GPTQ's codes (the others rounded to nearest: by
   * measurement, or past GPTQ's bounds).
   */
  layers: number;
  gptqLayers: number;
  /**
   * Mean relative output error ||Y − Ŷ|| / ||Y|| on the calibration data over the layers GPTQ was
   * tried on (all within its bounds), with
   * the codes stored and with round-to-nearest's (each layer's error is its own: both read the
   * float model's activation).
   */
  error: number;
  rtnError: number;
}

/** The method's name as the report gives it: gptq, rtn, or both with how many layers each. */
export function methodUsed(m: MethodChoice): string {
  if (m.gptqLayers === m.layers) return 'gptq';
  if (m.gptqLayers === 0) return 'rtn';
  return `gptq on ${m.gptqLayers} of ${m.layers} layers, rtn on the others`;
}

/**
 * Replaces, in `candidates`, each MatMulNBits layer by its GPTQ form where `opts.method` asks for
 * it (gptq) or where it measures better (auto); leaves every such layer's `error` measured.
 * Undefined when there is no such layer, or none within GPTQ's bounds.
 */
export async function chooseMethod(
  work: OnnxModel,
  candidates: Candidate[],
  opts: CheckedOptions,
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
): Promise<MethodChoice | undefined> {
  const eligible = candidates.filter((c) => c.gptq);
  if (eligible.length === 0) return undefined;
  // Within the bounds, in graph order (each layer's GPTQ runs once per dampening tried, and once more).
  const seen = new Set<string>();
  let [bytes, arithmetic] = [0, 0];
  let within = true;
  const rtn = eligible.filter((c) => {
    const { input, channels: k, outputs: n } = c.gptq!;
    const more = seen.has(input) ? 0 : 2 * k * k * 8;
    const cost = k * k * n * (GPTQ_DAMPINGS.length + 1);
    within &&= bytes + more <= GPTQ_MAX_HESSIAN_BYTES && arithmetic + cost <= GPTQ_MAX_WORK;
    if (!within) return false;
    seen.add(input);
    bytes += more;
    arithmetic += cost;
    return true;
  });
  if (rtn.length < eligible.length) {
    log(`quantize: gptq on the first ${rtn.length} of ${eligible.length} layers; the others, past ${GPTQ_MAX_HESSIAN_BYTES / 2 ** 20} MiB of Hessians or ${GPTQ_MAX_WORK.toExponential(0)} multiply-adds, are rounded to nearest`);
  }
  if (rtn.length === 0) return undefined;
  const requests = new Map<string, HessianRequest>(rtn.map((c) => [c.gptq!.input, { tensor: c.gptq!.input, channels: c.gptq!.channels, float16: c.gptq!.float16 }]));
  // Recorded and replayed like the pruning's statistics (util/passes.ts).
  const hessians = await opts.passes.pass(`gptq hessians of ${[...requests.keys()].join(', ')}`, () => collectHessians(work, [...requests.values()], calibration));
  log(`quantize: gptq on ${rtn.length} layers (Hessians of ${requests.size} inputs)`);
  const gptq: Candidate[] = [];
  for (const c of rtn) gptq.push(await c.gptq!.make(hessians.get(c.gptq!.input)!));
  await measureCandidates(work, [...rtn, ...gptq], opts, calibration, log);
  let gptqLayers = 0;
  let [error, rtnError] = [0, 0];
  rtn.forEach((r, i) => {
    const g = gptq[i];
    const useGptq = opts.method === 'gptq' || (g.error ?? Infinity) < (r.error ?? Infinity);
    const chosen = useGptq ? g : r;
    if (useGptq) {
      gptqLayers++;
      g.rtnError = r.error;
    }
    candidates[candidates.indexOf(r)] = chosen;
    error += (chosen.error ?? 0) / rtn.length;
    rtnError += (r.error ?? 0) / rtn.length;
  });
  const choice: MethodChoice = { asked: opts.method, layers: eligible.length, gptqLayers, error, rtnError };
  log(`quantize: method ${opts.method} -> ${methodUsed(choice)}: mean output ${formatError(error)} (round to nearest: ${formatError(rtnError)})`);
  return choice;
}
