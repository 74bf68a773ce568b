// One measurement in a fresh process, so its peak RSS is its own. Prints one JSON line.
// Usage: node -r ts-node/register/transpile-only tools/bench/child.ts <task> [args...]
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { klFromLog, logSoftmax } from '../../src/eval/metrics';
import { OnnxModel } from '../../src/onnx/model';
import { writeModel } from '../../src/onnx/write';
import { pruneModel } from '../../src/prune';
import { StatsTap, findConsumers, statsRequests } from '../../src/prune/stats';
import { sessionForProto } from '../../src/onnx/runtime';
import { analyze } from '../../src/graph/analysis';
import { createSession, ort } from '../../src/onnx/runtime';
import { floatWeightBytes } from '../../src/onnx/skeleton';
import { measureMemory, memoryCommand, writeFeeds } from '../../src/eval/memory';
import { Batch, batches, loadCalibration } from '../../src/eval/calibration';
import { DataType } from '../../src/onnx/dtype';
import { elementCount, fromFloat32, toFloat32 } from '../../src/onnx/tensor';
import { onnx } from 'onnx-proto';
import { estimateRunMemory, traceAtBatch, withRows } from './memory-estimate';
import { spawnSync } from 'child_process';
import { measureMacs } from '../../src/graph/cost';
import type { Feeds } from '../../src/onnx/runtime';

const peakRssMb = () => process.resourceUsage().maxRSS / 1024;

/** Bytes this process reads with fs.readSync from here on (the tool reads weights with it; onnxruntime maps its own). */
function countReads(): { bytes: number } {
  const counter = { bytes: 0 };
  const nodeFs = require('fs') as typeof fs; // the module object: src's namespace imports read through to it
  const read = nodeFs.readSync;
  nodeFs.readSync = ((...a: Parameters<typeof fs.readSync>) => {
    const n = read(...a);
    counter.bytes += n;
    return n;
  }) as typeof fs.readSync;
  return counter;
}

function tokenFeeds(batches: number, batch: number, seq: number, vocab: number): Feeds[] {
  const out: Feeds[] = [];
  for (let b = 0; b < batches; b++) {
    const ids = new BigInt64Array(batch * seq);
    for (let i = 0; i < ids.length; i++) ids[i] = BigInt((i * 7919 + b * 104729) % vocab);
    out.push({ input_ids: new ort.Tensor('int64', ids, [batch, seq]) });
  }
  return out;
}

/**
 * Resident MiB at exit of the gate's measuring process (the model, or none), read from
 * /proc/self/smaps by a module node preloads: shared libraries' and node's code, and the rest.
 */
function residentAtExit(modelFile: string | undefined, feedsFile: string, dir: string): { code: number; rest: number } {
  const preload = path.join(dir, 'resident.js');
  const out = path.join(dir, 'resident.json');
  fs.writeFileSync(
    preload,
    `process.on('exit', () => {
      let code = 0, rest = 0, lib = false;
      for (const line of require('fs').readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
        const m = /^[0-9a-f]+-[0-9a-f]+ \\S+ \\S+ \\S+ \\S+\\s*(.*)$/.exec(line);
        if (m) lib = /\\.so(\\.|$)|\\.node$|\\/node$/.test(m[1]);
        else if (line.startsWith('Rss:')) { const kb = Number(line.split(/\\s+/)[1]); if (lib) code += kb; else rest += kb; }
      }
      require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({ code: code / 1024, rest: rest / 1024 }));
    });`,
  );
  const { command, args, env } = memoryCommand(modelFile, feedsFile, undefined);
  const r = spawnSync(command, ['-r', preload, ...args], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`resident memory of ${modelFile ?? 'no model'}: ${r.stderr}`);
  return JSON.parse(fs.readFileSync(out, 'utf8')) as { code: number; rest: number };
}

/**
 * A copy of `model` with its float32 weights (4096 elements and more) stored in float16, each
 * behind a Cast to float32, as tools/bench/make_large.py writes its float16 model.
 */
function float16Copy(model: OnnxModel): OnnxModel {
  const copy = model.clone();
  const name = copy.uniqueNames();
  const casts: onnx.NodeProto[] = [];
  for (const t of [...copy.initializers]) {
    const dims = t.dims.map(Number);
    if (t.dataType !== DataType.FLOAT || elementCount(dims) < 4096) continue;
    const half = name(`${t.name}_fp16`);
    copy.addInitializer(half, fromFloat32(toFloat32(copy.constant(t.name)!), DataType.FLOAT16, dims));
    const to = onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DataType.FLOAT });
    casts.push(onnx.NodeProto.create({ opType: 'Cast', name: `${half}_cast`, input: [half], output: [t.name], attribute: [to] }));
  }
  const cast = new Set(casts.map((c) => c.output[0]));
  copy.graph.initializer = copy.initializers.filter((t) => !cast.has(t.name));
  copy.graph.input = copy.graph.input.filter((v) => !cast.has(v.name ?? ''));
  copy.graph.node = [...casts, ...copy.graph.node];
  copy.reindexConstants();
  return copy;
}

async function main() {
  const [task, ...args] = process.argv.slice(2);
  if (task === 'prune') {
    // Prune 30 % (magnitude, or activation statistics on 2 x 64 tokens) and write the result in
    // the input's layout: seconds from reading to written, peak RSS, and how many times the
    // input's weight bytes were read while pruning and while writing.
    const [file, target, outDir, importance = 'magnitude'] = args;
    const out = outDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-bench-'));
    fs.rmSync(out, { recursive: true, force: true }); // a fresh folder (removing a GB file is not the tool's time)
    fs.mkdirSync(out, { recursive: true });
    const reads = countReads();
    const t0 = performance.now();
    const model = OnnxModel.read(file);
    const feeds = tokenFeeds(2, 1, 64, 32000);
    const calibration = importance === 'activation' ? () => feeds : undefined;
    const result = await pruneModel(model, { target: Number(target), structures: ['ffn', 'heads'], importance: importance as 'magnitude' | 'activation', compensate: 'none', calibration });
    const pruneSeconds = (performance.now() - t0) / 1000;
    const readForPruning = reads.bytes;
    const written = writeModel(result.model, path.join(out, 'pruned.onnx'));
    const seconds = (performance.now() - t0) / 1000;
    const weights = floatWeightBytes(model);
    let largest = 0;
    for (const t of model.initializers) largest = Math.max(largest, t.dims.map(Number).reduce((a, b) => a * b, 1) * (t.dataType === 10 ? 2 : 4));
    const dataBytes = model.bytesOnDisk() - fs.statSync(file).size;
    console.log(JSON.stringify({
      task, file, importance, weightsMb: weights / 2 ** 20, largestMb: largest / 2 ** 20, modelMb: model.bytesOnDisk() / 2 ** 20,
      pruneSeconds, seconds, peakRssMb: peakRssMb(), removed: 1 - result.paramsAfter / result.paramsBefore,
      readsPruning: readForPruning / dataBytes, readsWriting: (reads.bytes - readForPruning) / dataBytes,
      out: written.path, external: written.dataPath !== undefined, writtenMb: written.bytes / 2 ** 20,
    }));
    return;
  }
  if (task === 'memory') {
    // The gate's memory metric against an estimate made without any memory counter
    // (memory-estimate.ts), on the calibration set's first batch as the gate measures it (or a
    // batch of `batch` samples); `fp16` measures a copy with its weights stored in float16.
    const [file, calibration, batch, form] = args;
    const source = OnnxModel.read(file);
    const set = loadCalibration(calibration, source);
    const first = (batches(set).next().value as Batch).feeds;
    const feeds = batch ? withRows(first, Number(batch)) : first;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-bench-'));
    try {
      const measured = form === 'fp16' ? writeModel(float16Copy(source), path.join(dir, `${path.basename(file, '.onnx')}-fp16.onnx`)).path : file;
      const model = OnnxModel.read(measured);
      // Three measurements as the gate makes them (the process without a model is measured once).
      const runs = [];
      for (let i = 0; i < 3; i++) runs.push(await measureMemory(measured, feeds, undefined));
      // The same process with glibc's own, moving mmap threshold (src/eval/memory.ts says why the
      // gate holds it fixed).
      const feedsFile = path.join(dir, 'feeds.json');
      writeFeeds(feeds, feedsFile);
      const { command, args: commandArgs, env } = memoryCommand(measured, feedsFile, undefined);
      const movingPeaks = [];
      for (let i = 0; i < 3; i++) {
        const r = spawnSync(command, commandArgs, { encoding: 'utf8', env: { ...env, GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? '' } });
        movingPeaks.push((JSON.parse(r.stdout) as { peakKb: number }).peakKb / 1024);
      }
      // Where the process with the model holds more than the one without, at exit: shared
      // libraries' code (onnxruntime's kernels paged in) and the rest.
      const [withModel, without] = [residentAtExit(measured, feedsFile, dir), residentAtExit(undefined, feedsFile, dir)];
      const estimate = estimateRunMemory(model, await traceAtBatch(model, feeds));
      const mib = (bytes: number) => bytes / 2 ** 20;
      const net = runs.map((r) => r.net).sort((a, b) => a - b)[1];
      console.log(JSON.stringify({
        task, file: path.relative(process.cwd(), file), form: form ?? 'as stored', batch: feeds[Object.keys(feeds)[0]].dims[0], inputShapes: Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dims])),
        modelMib: mib(model.bytesOnDisk()), nodes: estimate.nodes, runtimeMib: runs[0].runtime, peakMib: runs.map((r) => r.peak), netMib: runs.map((r) => r.net),
        movingPeakMib: movingPeaks, codeMib: withModel.code - without.code, restMib: withModel.rest - without.rest, weightsMib: mib(estimate.weights), activationsMib: mib(estimate.activations),
        storedMib: mib(estimate.stored), foldedMib: mib(estimate.folded), estimateMib: mib(estimate.total), ratio: net / mib(estimate.total),
      }));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  if (task === 'search') {
    // The allocation search's cost on a large model: passes over a calibration set of 2 x 64
    // tokens, counted where they happen (statistics collection, each candidate's loss).
    const [file] = args;
    const model = OnnxModel.read(file);
    const feeds = tokenFeeds(2, 1, 64, 32000);
    let statsPasses = 0;
    let lossPasses = 0;
    const calibration = function* () {
      statsPasses++;
      yield* feeds;
    };
    const logitsOf = async (session: Awaited<ReturnType<typeof createSession>>, f: Feeds) => (await session.run(f))[session.outputNames[0]].data as Float32Array;
    const baseSession = await createSession(model);
    const baseLogits: Float32Array[] = [];
    for (const f of feeds) baseLogits.push(await logitsOf(baseSession, f));
    await baseSession.release();
    const vocab = 32000;
    const [logP, logQ] = [new Float64Array(vocab), new Float64Array(vocab)];
    const damage = {
      name: 'KL divergence from the base',
      async loss(candidate: OnnxModel, share: number) {
        const take = Math.max(1, Math.floor(share * feeds.length));
        lossPasses += take / feeds.length;
        const session = await createSession(candidate);
        let kl = 0;
        let rows = 0;
        for (let b = 0; b < take; b++) {
          const [p, q] = [baseLogits[b], await logitsOf(session, feeds[b])];
          for (let off = 0; off < p.length; off += vocab, rows++) {
            logSoftmax(p, off, vocab, logP);
            logSoftmax(q, off, vocab, logQ);
            kl += klFromLog(logP, logQ, vocab);
          }
        }
        await session.release();
        return kl / rows;
      },
    };
    const t0 = performance.now();
    const result = await pruneModel(model, { target: 0.3, structures: ['ffn', 'heads'], importance: 'activation', compensate: 'auto', damage, calibration });
    const seconds = (performance.now() - t0) / 1000;
    const a = result.allocation!;
    console.log(JSON.stringify({ task, file, statsPasses, lossPasses, passes: statsPasses + lossPasses, seconds, strategy: a.strategy, compensate: a.compensate, tried: a.tried.filter((t) => t.loss !== null).length, removed: 1 - result.paramsAfter / result.paramsBefore, peakRssMb: peakRssMb() }));
    return;
  }
  if (task === 'stats' || task === 'infer') {
    // Collecting statistics against plain inference over the same batches.
    const [file, batches, batch, seq, vocab] = args.map((a, i) => (i === 0 ? a : Number(a))) as [string, number, number, number, number];
    const model = OnnxModel.read(file);
    const feeds = tokenFeeds(batches, batch, seq, vocab);
    let seconds: number;
    if (task === 'infer') {
      const session = await createSession(model);
      await session.run(feeds[0]);
      const t0 = performance.now();
      for (const f of feeds) await session.run(f);
      seconds = (performance.now() - t0) / 1000;
      await session.release();
    } else {
      const analysis = await analyze(model);
      const consumers = analysis.groups.flatMap((g) => findConsumers(analysis, g));
      const requests = statsRequests(consumers, false);
      // Same protocol as the plain run: session made and warmed up untimed, then the batches.
      const tap = new StatsTap(model, requests);
      const stats = await sessionForProto(tap.model, tap.model.proto, { enableCpuMemArena: false });
      tap.add(await stats.run(feeds[0], tap.outputs));
      const t0 = performance.now();
      for (const f of feeds) tap.add(await stats.run(f, tap.outputs));
      seconds = (performance.now() - t0) / 1000;
      await stats.release();
    }
    console.log(JSON.stringify({ task, file, samples: batches * batch, seconds, peakRssMb: peakRssMb() }));
    return;
  }
  if (task === 'latency') {
    // Pruned against base latency at batch 1 and a few hundred tokens, runs interleaved so
    // machine drift cancels; and the MAC ratio at the same input shape.
    const [baseFile, prunedFile, seq, runs] = args.map((a, i) => (i < 2 ? a : Number(a))) as [string, string, number, number];
    const base = OnnxModel.read(baseFile);
    const pruned = OnnxModel.read(prunedFile);
    const [feeds] = tokenFeeds(1, 1, seq, 32000);
    const sb = await createSession(base);
    const sp = await createSession(pruned);
    await sb.run(feeds);
    await sp.run(feeds);
    const tb: number[] = [];
    const tp: number[] = [];
    for (let r = 0; r < runs; r++) {
      let t0 = performance.now();
      await sb.run(feeds);
      tb.push(performance.now() - t0);
      t0 = performance.now();
      await sp.run(feeds);
      tp.push(performance.now() - t0);
    }
    await sb.release();
    await sp.release();
    const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
    const macsBase = (await measureMacs(base, feeds)).total;
    const macsPruned = (await measureMacs(pruned, feeds)).total;
    const latencyRatio = median(tp) / median(tb);
    const macRatio = macsPruned / macsBase;
    console.log(JSON.stringify({ task, seq, runs, baseMs: median(tb), prunedMs: median(tp), latencyRatio, macRatio, gap: latencyRatio / macRatio - 1 }));
    return;
  }
  throw new Error(`unknown task ${task}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
