// Real models from other toolchains (test/corpus/manifest.json, fetched by tools/corpus.ts, and
// a float16 export committed beside it): a prune at 0.3 ends in a valid model or a one-line
// reason, never an internal error. Every written model passes the ONNX checker when its input
// did, loads in onnxruntime, keeps its outputs' shapes, its inputs', outputs' and weights' element
// types (a float16 model stays float16) and stays finite; conv nets and MLPs lose at least 20 % of
// their parameters. Where the corpus cannot be fetched (outside CI) the committed models still
// run, and one skipped test says why the others do not.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../src/errors';
import { traceTwice } from '../src/graph/analysis';
import { OnnxModel } from '../src/onnx/model';
import { dtypeName, isFloatDType } from '../src/onnx/dtype';
import { dummyFeeds } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import { findPrunable, pruneModel } from '../src/prune';
import { expectCheckerAccepts } from './helpers/checker';
import { withVariedTokens } from './helpers/fixtures';
import { expectZeroedEqual, outputValues, outputsAt } from './helpers/zeroed';
import { CorpusModel, committedCorpus, fetchCorpus, optimizedCorpus, readManifest } from '../tools/corpus';

let corpus: CorpusModel[];
let unavailable: string | undefined;
try {
  corpus = fetchCorpus();
} catch (e) {
  unavailable = (e as Error).message.split('\n')[0];
  if (process.env.CI === 'true') throw new Error(`the corpus could not be fetched: ${unavailable}`);
  corpus = committedCorpus();
}
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-corpus-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * The element type of every graph input and output and every initializer, by name: what a prune
 * must keep (it removes entries, never changes a tensor's type).
 */
function elementTypes(model: OnnxModel): Record<string, string> {
  const types: Record<string, string> = {};
  for (const v of [...model.graph.input, ...model.graph.output]) types[`value ${v.name}`] = dtypeName(v.type?.tensorType?.elemType ?? 0);
  for (const t of model.initializers) types[`initializer ${t.name}`] = dtypeName(t.dataType ?? 0);
  return types;
}

/** The element types of a model's float tensors: its initializers, Constant values, graph inputs and outputs. */
function floatTypes(model: OnnxModel): string[] {
  const types = new Set<number>();
  for (const t of model.initializers) types.add(t.dataType ?? 0);
  for (const n of model.graph.node) if (n.opType === 'Constant') types.add(model.constantInfo(n.output![0])?.dtype ?? 0);
  for (const v of [...model.graph.input, ...model.graph.output]) types.add(v.type?.tensorType?.elemType ?? 0);
  return [...types].filter(isFloatDType).map(dtypeName).sort();
}

if (unavailable) {
  const fetched = readManifest().models.filter((m) => !m.committed).length;
  console.warn(`the corpus could not be fetched, so ${fetched} of its models are skipped: ${unavailable}`);
  test.skip(`the ${fetched} fetched models of the corpus [skipped: not fetched here: ${unavailable}]`, () => undefined);
}

for (const m of corpus) describe(m.id, () => {
  test(`prune at 0.3: ${m.expect === 'prune' ? 'a valid, smaller model' : 'one line saying why not'}`, async () => {
    const base = OnnxModel.read(m.file);
    const options = { target: 0.3, structures: ['ffn', 'heads', 'channels'] as ('ffn' | 'heads' | 'channels')[], importance: 'magnitude' as const, compensate: 'none' as const };
    if (m.expect === 'nothing') {
      const error = await pruneModel(base, options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(UserError);
      expect((error as Error).message).not.toContain('\n');
      expect((error as Error).message).toContain(m.says);
      // inspect says the same, with nothing listed as prunable.
      const found = await findPrunable(base);
      expect([found.prunable, found.skipped.map((e) => e.reason).join('; ')]).toEqual([[], expect.stringContaining(m.says ?? '')]);
      return;
    }
    // A model labelled float16 is one: weights, activations, inputs and outputs.
    if (m.precision) expect(floatTypes(base)).toEqual([m.precision]);
    const result = await pruneModel(base, options);
    const removed = 1 - result.paramsAfter / result.paramsBefore;
    if (m.kind === 'conv' || m.kind === 'mlp') expect(removed).toBeGreaterThanOrEqual(0.2);
    const file = path.join(tmp, `${m.id}.onnx`);
    writeModel(result.model, file);
    const written = OnnxModel.read(file);
    const [before, after] = [elementTypes(base), elementTypes(written)];
    const shared = Object.keys(after).filter((k) => k in before);
    expect(Object.fromEntries(shared.map((k) => [k, after[k]]))).toEqual(Object.fromEntries(shared.map((k) => [k, before[k]])));
    if (m.precision) expect(floatTypes(written)).toEqual([m.precision]);
    const [trace] = await traceTwice(base);
    const feeds = withVariedTokens(base, dummyFeeds(base, ...(trace.sizes as [number, number])));
    const [want, got] = [await outputsAt(base, feeds), await outputsAt(written, feeds)];
    for (const [name, t] of Object.entries(want)) {
      expect([name, got[name]?.dims, got[name]?.type]).toEqual([name, t.dims, t.type]);
      if (t.type.startsWith('float')) expect([name, outputValues(got[name]).every(Number.isFinite)]).toEqual([name, true]);
    }
    expectCheckerAccepts(file, m.file);
    // Exactness: the input with the removed entries zeroed computes the same outputs.
    if (m.exact !== false) await expectZeroedEqual(base, result, feeds, got);
    // Target 0 writes a model that computes bit for bit the same.
    const none = path.join(tmp, `${m.id}-target-0.onnx`);
    writeModel((await pruneModel(base, { ...options, target: 0 })).model, none);
    const same = await outputsAt(OnnxModel.read(none), feeds);
    for (const [name, t] of Object.entries(want)) expect([name, Buffer.from((same[name].data as Float32Array).buffer).equals(Buffer.from((t.data as Float32Array).buffer))]).toEqual([name, true]);
  });
});

describe("models saved after onnxruntime's optimizer prune like their unfused originals", () => {
  test.each(readManifest().optimized.models.map((m) => m.id))('%s', async (id) => {
    const m = (await optimizedCorpus()).find((x) => x.id === id)!;
    const options = { target: 0.3, structures: ['ffn', 'heads', 'channels'] as ('ffn' | 'heads' | 'channels')[], importance: 'magnitude' as const, compensate: 'none' as const };
    const share = async (file: string) => {
      const r = await pruneModel(OnnxModel.read(file), options);
      return { removed: 1 - r.paramsAfter / r.paramsBefore, result: r };
    };
    const [fused, unfused] = [await share(m.file), await share(m.source)];
    expect(Math.abs(fused.removed - unfused.removed)).toBeLessThanOrEqual(0.02);
    // The same groups are found (which of them the ranking then cuts may differ a little).
    const groups = async (file: string) => (await findPrunable(OnnxModel.read(file))).prunable.map((g) => `${g.kind} ${g.units}`);
    expect(await groups(m.file)).toEqual(await groups(m.source));
    const file = path.join(tmp, `${m.id}.onnx`);
    writeModel(fused.result.model, file);
    const base = OnnxModel.read(m.file);
    // Token ids drawn over the whole vocabulary, so that a row or position the prune moved shows.
    const feeds = withVariedTokens(base, dummyFeeds(base, 2, 5));
    const [want, got] = [await outputsAt(base, feeds), await outputsAt(OnnxModel.read(file), feeds)];
    for (const [n, t] of Object.entries(want)) expect([n, got[n]?.dims]).toEqual([n, t.dims]);
    expectCheckerAccepts(file, m.file);
    await expectZeroedEqual(base, fused.result, feeds, got);
  });
});
