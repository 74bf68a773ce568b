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

export interface MethodChoice {
  /** The method asked. */
  asked: QuantizeMethod;
  /** MatMulNBits layers the method chose codes for, and those stored with GPTQ's codes. */
  layers: number;
  gptqLayers: number;
  /**
   * Mean relative output error ||Y − Ŷ|| / ||Y|| on the calibration data over those layers, with
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
 * Undefined when there is no such layer.
 */
export async function chooseMethod(
  work: OnnxModel,
  candidates: Candidate[],
  opts: CheckedOptions,
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
): Promise<MethodChoice | undefined> {
  const rtn = candidates.filter((c) => c.gptq);
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
  const choice: MethodChoice = { asked: opts.method, layers: rtn.length, gptqLayers, error, rtnError };
  log(`quantize: method ${opts.method} -> ${methodUsed(choice)}: mean output ${formatError(error)} (round to nearest: ${formatError(rtnError)})`);
  return choice;
}
