import { version } from '../../package.json';
import type { Config } from '../config/config';
import { STRUCTURES } from '../graph/analysis';
import { countParams } from '../graph/cost';
import type { OnnxModel } from '../onnx/model';
import type { ProducerStamp } from '../onnx/write';
import type { PruneResult } from '../prune/types';
import { canonicalJson, sha256, sha256OfFiles } from '../util/hash';

/**
 * What a written model says about itself (docs/contracts.md, "What a written model says"):
 * producer prune-gate, and metadata_props naming its base, what was removed and how, and the
 * settings, beside the input's own metadata_props. Everything in it follows from the inputs and
 * the settings, never from where or by which job it was written, so that every job of a matrix
 * writes the same bytes (docs/contracts.md, "Beyond one runner").
 */

export const PRODUCER_NAME = 'prune-gate';
/** The prefix of the metadata keys prune-gate writes: an input's own keys with it are replaced, not repeated. */
const KEY_PREFIX = 'prune-gate.';

/** The sha256 of a model as read: its .onnx file's bytes, then each external data file's, in the order the model first names them. */
export function modelSha256(model: OnnxModel): string {
  const files = model.files();
  if (files.length === 0) throw new Error('internal: a model built in memory has no bytes to hash');
  return sha256OfFiles(files);
}

/** What every model written from one base with one set of settings carries alike. */
export interface BaseOrigin {
  sha256: string;
  params: number;
  /** The base's producer_name and producer_version, "unknown" when it names none. */
  producer: string;
  /** The base's metadata_props, but any prune-gate.* key (the base is itself an output). */
  metadata: { key: string; value: string }[];
  configSha256: string;
}

/**
 * `base` and the settings that build models from it (`settings`: what config-sha256 covers).
 * `baseSha256` when the caller hashed the base already.
 */
export function baseOrigin(base: OnnxModel, settings: object, baseSha256 = modelSha256(base)): BaseOrigin {
  const { producerName, producerVersion, metadataProps } = base.proto;
  return {
    sha256: baseSha256,
    params: countParams(base),
    producer: [producerName, producerVersion].filter(Boolean).join(' ') || 'unknown',
    metadata: (metadataProps ?? []).filter((p) => !(p.key ?? '').startsWith(KEY_PREFIX)).map((p) => ({ key: p.key ?? '', value: p.value ?? '' })),
    configSha256: sha256(canonicalJson(settings)),
  };
}

/**
 * The settings of a gate (run, a matrix job, the merge) that build its models: the config's
 * prune, quantize, keep-names, external-data and budget. Paths are left out (the model is named
 * by its bytes); the gate's rules and latency settings only judge candidates.
 */
export function gateModelSettings(config: Config): object {
  return { prune: config.prune, quantize: config.quantize, keepNames: config.keepNames, externalData: config.externalData, budget: config.budget };
}

/** What the pruning steps that made a model did (each step's PruneResult, in order). */
export type PruningSteps = readonly Pick<PruneResult, 'pruned' | 'compensations'>[];

/** The producer and metadata_props of `model`, made from `origin` by `steps`, as it is written. */
export function producerStamp(origin: BaseOrigin, model: OnnxModel, steps: PruningSteps): ProducerStamp {
  const kinds = new Set(steps.flatMap((s) => s.pruned.map((p) => p.kind)));
  const compensations = [...new Set(steps.flatMap((s) => s.compensations ?? []).filter((c) => c !== 'none'))];
  const removed = origin.params > 0 ? (origin.params - countParams(model)) / origin.params : 0;
  const ours: [string, string][] = [
    ['base-sha256', origin.sha256],
    ['removed', removed.toFixed(4)],
    ['structures', STRUCTURES.filter((k) => kinds.has(k)).join(',') || 'none'],
    ['compensation', compensations.join(',') || 'none'],
    ['config-sha256', origin.configSha256],
    ['source-producer', origin.producer],
  ];
  return {
    name: PRODUCER_NAME,
    version,
    metadata: [...origin.metadata, ...ours.map(([key, value]) => ({ key: `${KEY_PREFIX}${key}`, value }))],
  };
}
