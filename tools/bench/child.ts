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
    // The memory metric against GNU time's maximum resident set size for the same load-and-run.
    const [file, vocab = '32000'] = args;
    const [feeds] = tokenFeeds(1, 1, 64, Number(vocab));
    const measured = await measureMemory(file, feeds, undefined);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-bench-'));
    writeFeeds(feeds, path.join(dir, 'feeds.json'));
    const [command, commandArgs] = memoryCommand(file, path.join(dir, 'feeds.json'), undefined);
    const timed = spawnSync('/usr/bin/time', ['-v', command, ...commandArgs], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(timed.stderr ?? '');
    const gnuTime = kb ? Number(kb[1]) / 1024 : null;
    console.log(JSON.stringify({ task, file, modelMb: OnnxModel.read(file).bytesOnDisk() / 2 ** 20, measuredMib: measured, gnuTimeMib: gnuTime, ratio: gnuTime ? measured / gnuTime : null }));
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
