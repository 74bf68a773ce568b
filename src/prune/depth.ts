import { ResidualBlock, findBlocks, removeBlocks } from '../graph/blocks';
import { countParams } from '../graph/cost';
import { OnnxModel } from '../onnx/model';
import type { Feeds, ort } from '../onnx/runtime';
import { toFloat32 } from '../onnx/tensor';
import { DataType } from '../onnx/dtype';
import { UserError } from '../errors';
import { sessionExposing } from './stats';
import { DepthSearch, PruneOptions, PruneResult, PrunedEntry, SkippedEntry, Structure, newPruneMemory } from './types';

/**
 * Sets of blocks alone measured with a damage measure: at most this many, each at most NEAR (of
 * the model's parameters) farther from the target than the nearest set.
 */
const DEPTH_CANDIDATES = 4;
const NEAR = 0.025;

/** How far under its target a candidate's blocks may stop for width to make up the rest (as the width plan's slack). */
const PLAN_SLACK = 0.0025;

/**
 * Depth pruning (docs/pruning.md, "Depth"): whole residual blocks removed, the least
 * influential first. A block's influence is ShortGPT's block influence (Men et al. 2024,
 * docs/pruning.md): 1 − the mean cosine similarity between its input x and the residual sum
 * x + f(x), per token (per pixel of a feature map), over the calibration set.
 *
 * Sets of blocks are compared by their summed influence (leastInfluence). With `blocks` alone,
 * the least influential set whose parameters come closest to the target goes; with a damage
 * measure, up to four sets about as near the target (within 2.5 % of the parameters of the
 * nearest) are built and the lowest calibration loss kept. With width
 * structures too, a set of blocks within the target goes and width pruning (`prune`, the
 * engine's width step) removes the rest: with a damage measure, no blocks, the largest set that
 * fits and two between (of the sets no larger set beats on influence) are each built and the
 * candidate with the lowest calibration loss is kept; without one, the largest set that fits.
 */
export async function pruneWithBlocks(model: OnnxModel, options: PruneOptions, prune: (model: OnnxModel, options: PruneOptions) => Promise<PruneResult>): Promise<PruneResult> {
  const log = options.log ?? (() => undefined);
  if (!options.calibration) {
    throw new UserError('structures: blocks needs calibration data (each block\'s influence is measured on it): give a calibration set, or leave blocks out of structures');
  }
  const width = options.structures.filter((s): s is Exclude<Structure, 'blocks'> => s !== 'blocks');
  const paramsBefore = countParams(model);
  const found = await findBlocks(model);
  const blockSkipped: SkippedEntry[] = found.skipped.map((s) => ({ where: s.where, reason: `block left whole: ${s.reason}` }));
  const influence = found.blocks.length ? await blockInfluence(model, found.blocks, options.calibration) : [];
  const scored = found.blocks.map((b, i) => ({ block: b, influence: influence[i] }));
  const target = options.target * paramsBefore;
  const slack = PLAN_SLACK * paramsBefore;
  const reachable = leastInfluence(scored, paramsBefore);
  let sets: Scored[][];
  if (width.length === 0) {
    // Whole blocks rarely add up to the target: the sets closest to it, each the least influential
    // of its size. Summed influence misjudges blocks that matter together (every attention block
    // of a model: nothing mixes tokens any more), so with a damage measure the nearest few are
    // built and measured.
    // Only sets about as near as the nearest compete: a loss is lower for removing less.
    const distance = (c: BlockSet) => Math.abs(c.params - target);
    const nearest = [...reachable].sort((a, b) => distance(a) - distance(b));
    const near = nearest.filter((c) => distance(c) <= distance(nearest[0]) + NEAR * paramsBefore);
    sets = near.slice(0, options.damage ? DEPTH_CANDIDATES : 1).map((c) => c.set);
  } else {
    // Blocks up to the target, width the rest: with a damage measure, no blocks, the most that
    // fit and two sets between are each measured; without one, the most that fit.
    const fits = paretoFront(reachable).filter((f) => f.params <= target + slack);
    const picks = options.damage ? [0, Math.round((fits.length - 1) / 3), Math.round((2 * (fits.length - 1)) / 3), fits.length - 1] : [fits.length - 1];
    sets = [...new Set(picks)].map((i) => fits[i].set);
  }
  log(`blocks: ${scored.length} removable, influence ${scored.map((o) => o.influence.toFixed(4)).join(', ')}; trying ${sets.map((s) => s.length).join(', ')} removed`);

  const tried: DepthSearch['tried'] = [];
  let kept: { result: PruneResult; set: Scored[]; loss: number | null } | undefined;
  for (const set of sets) {
    const shallow = set.length > 0 ? removeBlocks(model, set.map((o) => o.block)) : model;
    const have = countParams(shallow);
    const rest = have > 0 ? Math.max(0, (have - (paramsBefore - target)) / have) : 0;
    const widthResult: PruneResult =
      width.length > 0 && rest > 0
        ? await prune(shallow, { ...options, structures: width, target: rest, memory: sets.length > 1 ? newPruneMemory() : options.memory })
        : { model: shallow, pruned: [], skipped: [], paramsBefore: have, paramsAfter: have };
    const loss = sets.length > 1 && options.damage ? await options.damage.loss(widthResult.model, 1) : null;
    const params = paramsBefore - countParams(widthResult.model);
    tried.push({ blocks: set.length, blockParams: paramsBefore - have, loss, params });
    log(`blocks: ${set.length} removed${width.length ? ', then width' : ''}: ${((params / paramsBefore) * 100).toFixed(1)} % of this model's parameters${loss === null ? '' : `, loss ${loss.toPrecision(4)}`}`);
    if (!kept || (loss !== null && kept.loss !== null && loss < kept.loss)) kept = { result: widthResult, set, loss };
  }
  const { result, set } = kept!;
  const count = set.length;
  const went = new Set(set.map((o) => o.block));
  const blockEntries: PrunedEntry[] = found.blocks.filter((b) => went.has(b)).map((b) => ({ kind: 'blocks', where: blockWhere(b), before: 1, after: 0, params: b.params }));
  const depth: DepthSearch = {
    measure: 'block influence: 1 − mean cosine of x and x + f(x) on the calibration set',
    blocks: [...scored].sort((a, b) => a.influence - b.influence).map((o) => ({ where: o.block.where, influence: o.influence, params: o.block.params, removed: went.has(o.block) })),
    tried,
    removed: count,
  };
  const paramsAfter = countParams(result.model);
  const short = width.length === 0 && Math.abs(paramsBefore - paramsAfter - target) > PLAN_SLACK * paramsBefore
    ? `granularity: the whole blocks kept remove ${(((paramsBefore - paramsAfter) / paramsBefore) * 100).toFixed(1)} % of the parameters, ${(options.target * 100).toFixed(1)} % were asked`
    : result.short;
  return {
    ...result,
    pruned: [...blockEntries, ...result.pruned],
    skipped: [...blockSkipped, ...result.skipped],
    paramsBefore,
    paramsAfter,
    // `sliced` speaks of slicing only: a model without some of its blocks is not the input with entries zeroed.
    sliced: count > 0 ? undefined : result.sliced,
    depth,
    ...(short ? { short } : {}),
  };
}

interface Scored {
  block: ResidualBlock;
  influence: number;
}

/** Parameter counts are binned this finely for the knapsack below (of the model's parameters). */
const BINS = 2000;

/**
 * For each number of parameters whole blocks can free (in bins of the model's size), the set of
 * blocks freeing it with the least summed influence, ascending in parameters, the empty set
 * first. Blocks' weights are disjoint, so their parameters add up (0/1 knapsack).
 */
function leastInfluence(blocks: Scored[], modelParams: number): BlockSet[] {
  const unit = Math.max(1, modelParams / BINS);
  const sizes = blocks.map((b) => Math.max(1, Math.round(b.block.params / unit)));
  const total = sizes.reduce((a, b) => a + b, 0);
  const best = new Float64Array(total + 1).fill(Infinity);
  best[0] = 0;
  // taken[i][j]: block i is in the best set of size j over the first i + 1 blocks.
  const taken: Uint8Array[] = [];
  blocks.forEach((b, i) => {
    const row = new Uint8Array(total + 1);
    for (let j = total; j >= sizes[i]; j--) {
      const withIt = best[j - sizes[i]] + b.influence;
      if (withIt < best[j]) {
        best[j] = withIt;
        row[j] = 1;
      }
    }
    taken.push(row);
  });
  const sets: BlockSet[] = [];
  for (let j = 0; j <= total; j++) {
    if (!Number.isFinite(best[j])) continue;
    const set: Scored[] = [];
    for (let i = blocks.length - 1, at = j; i >= 0; i--) {
      if (taken[i][at]) {
        set.push(blocks[i]);
        at -= sizes[i];
      }
    }
    sets.push({ set, params: set.reduce((a, b) => a + b.block.params, 0), influence: best[j] });
  }
  return sets;
}

interface BlockSet {
  set: Scored[];
  params: number;
  influence: number;
}

/** The sets no set freeing more parameters beats on influence: ascending in both. */
function paretoFront(sets: BlockSet[]): BlockSet[] {
  const front: BlockSet[] = [];
  let least = Infinity;
  for (let k = sets.length - 1; k >= 0; k--) {
    if (sets[k].influence < least) {
      least = sets[k].influence;
      front.push(sets[k]);
    }
  }
  return front.reverse();
}

function blockWhere(b: ResidualBlock): string {
  const kept = b.keptFor.length ? `; kept what computes ${b.keptFor.join(', ')}` : '';
  return `${b.where}: ${b.weights.join(', ')}${kept}`;
}

/**
 * Each block's influence, 1 − E[cos(x, x + f(x))] over every position of every calibration
 * sample, the cosine taken along the block's feature axis (one pass with x and f(x) exposed).
 */
export async function blockInfluence(model: OnnxModel, blocks: ResidualBlock[], calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>): Promise<number[]> {
  const names = [...new Set(blocks.flatMap((b) => [b.input, b.output]))];
  const session = await sessionExposing(model, names);
  const sums = blocks.map(() => ({ cos: 0, count: 0 }));
  try {
    for await (const feeds of calibration()) {
      const out = await session.run(feeds, names);
      blocks.forEach((b, i) => {
        const s = cosineSum(out[b.input], out[b.output], b.featureAxis);
        sums[i].cos += s.cos;
        sums[i].count += s.count;
      });
    }
  } finally {
    await session.release();
  }
  return sums.map((s) => (s.count > 0 ? 1 - s.cos / s.count : 0));
}

/** The sum of cos(x, x + y) along `axis` over every other index, and how many were summed (zero vectors left out). */
function cosineSum(x: ort.Tensor, y: ort.Tensor, axis: number): { cos: number; count: number } {
  const xs = floats(x);
  const ys = floats(y);
  const dims = x.dims.map(Number);
  const n = dims[axis];
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  let cos = 0;
  let count = 0;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      let dot = 0;
      let xx = 0;
      let ss = 0;
      for (let k = 0, at = o * n * inner + j; k < n; k++, at += inner) {
        const a = xs[at];
        const s = a + ys[at];
        dot += a * s;
        xx += a * a;
        ss += s * s;
      }
      if (xx > 0 && ss > 0) {
        cos += dot / Math.sqrt(xx * ss);
        count++;
      }
    }
  }
  return { cos, count };
}

function floats(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float64') return Float32Array.from(t.data as Float64Array);
  if (t.type === 'float16') return toFloat32({ dtype: DataType.FLOAT16, dims: t.dims.map(Number), data: t.data as Uint16Array });
  throw new Error(`block influence: ${t.type} activations are not floating point`);
}
