import { OnnxModel } from '../onnx/model';
import { runInPieces } from '../onnx/pieces';
import { createSession, withSessionForm, type SessionForm } from '../onnx/runtime';
import { Batch, CalibrationSet, batches } from './calibration';
import { ComparisonAccumulator, TaskAccumulator, outputRows, planRows } from './metrics';
import type { MetricValues } from './metric-names';

/** How far the evaluation form's outputs are from the model as written, on a sample of the set. */
export interface FormGap {
  /** Samples compared: the set's first batch. */
  samples: number;
  /** The task's metrics (perplexity, accuracy, ...) of the model as written on them, and of the form. */
  float: MetricValues;
  form: MetricValues;
  /** The form's outputs against the float ones: top-1 agreement and KL divergence (as the gate compares a candidate with the base). */
  agreement: number;
  klDivergence: number;
  seconds: number;
}

/**
 * The gap of the evaluation `form` to `model` as written, on the set's first batch: the model
 * runs in float one piece at a time (runInPieces: pieces of at most `pieceBytes` of weights, so
 * it runs where it does not fit whole), then in the form as the gate runs it, and the two
 * outputs are compared as a candidate is with its base. Costs one batch of each, plus reading
 * and widening every float weight once.
 */
export async function measureFormGap(model: OnnxModel, set: CalibrationSet, form: SessionForm, pieceBytes: number, log?: (line: string) => void): Promise<FormGap> {
  const started = Date.now();
  const batch = batches(set).next().value as Batch;
  const floatOut = outputRows((await runInPieces(model, batch.feeds, [set.output], pieceBytes, log))[set.output]);
  const formOut = await withSessionForm(form, async () => {
    const session = await createSession(model, { enableCpuMemArena: false });
    try {
      return outputRows((await session.run(batch.feeds, [set.output]))[set.output]);
    } finally {
      await session.release();
    }
  });
  const floatTask = new TaskAccumulator(set.task);
  const formTask = new TaskAccumulator(set.task);
  const comparison = new ComparisonAccumulator();
  const plan = planRows(set, batch, floatOut);
  floatTask.add(floatOut, plan);
  formTask.add(formOut, plan);
  comparison.add(floatOut, formOut, plan);
  const compared = comparison.values();
  return {
    samples: batch.size,
    float: floatTask.values(),
    form: formTask.values(),
    agreement: compared.agreement ?? NaN,
    klDivergence: compared['kl-divergence'] ?? NaN,
    seconds: (Date.now() - started) / 1000,
  };
}
