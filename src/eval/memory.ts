import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Feeds } from '../onnx/runtime';

/**
 * The `memory` metric (docs/contracts.md, "The target device"): the peak resident memory, in MiB,
 * of a fresh process that loads the model with onnxruntime and runs one batch, as the app on the
 * device would. The child requires onnxruntime-node from where this process found it (the
 * action installs it at run time, outside any node_modules the child would search).
 */
const CHILD = `
const [ortPath, model, feedsFile, threads] = process.argv.slice(1);
const fs = require('fs');
const ort = require(ortPath);
const ARRAYS = { float32: Float32Array, float64: Float64Array, float16: Uint16Array, int64: BigInt64Array, uint64: BigUint64Array,
  int32: Int32Array, uint32: Uint32Array, int16: Int16Array, uint16: Uint16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };
(async () => {
  const options = { logSeverityLevel: 4 };
  if (Number(threads) > 0) options.intraOpNumThreads = Number(threads);
  const session = await ort.InferenceSession.create(model, options);
  const feeds = {};
  for (const f of JSON.parse(fs.readFileSync(feedsFile, 'utf8'))) {
    const bytes = Buffer.from(f.data, 'base64');
    const Array = ARRAYS[f.type];
    const data = new Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    feeds[f.name] = new ort.Tensor(f.type, data, f.dims);
  }
  await session.run(feeds);
  process.stdout.write(JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS }));
})().catch((e) => {
  process.stderr.write(String((e && e.message) || e).split('\\n')[0]);
  process.exit(1);
});
`;

/** Writes `feeds` where the measuring process reads them. */
export function writeFeeds(feeds: Feeds, file: string): void {
  const spec = Object.entries(feeds).map(([name, t]) => {
    const data = t.data as unknown as ArrayBufferView;
    return { name, type: t.type, dims: t.dims, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
  });
  fs.writeFileSync(file, JSON.stringify(spec));
}

/** The measuring process: node with the script above, given the model, the feeds file and the threads. */
export function memoryCommand(modelFile: string, feedsFile: string, threads: number | undefined): [string, string[]] {
  return [process.execPath, ['-e', CHILD, require.resolve('onnxruntime-node'), path.resolve(modelFile), feedsFile, String(threads ?? 0)]];
}

/** Peak RSS in MiB of a fresh process loading `modelFile` and running `feeds` on `threads` intra-op threads. */
export async function measureMemory(modelFile: string, feeds: Feeds, threads: number | undefined): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-memory-'));
  try {
    const feedsFile = path.join(dir, 'feeds.json');
    writeFeeds(feeds, feedsFile);
    const [command, args] = memoryCommand(modelFile, feedsFile, threads);
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(command, args, { maxBuffer: 1 << 20 }, (error, out, err) => {
        if (error) reject(new Error(`measuring the memory of ${modelFile} failed: ${err.trim() || error.message}`));
        else resolve(out);
      });
    });
    return (JSON.parse(stdout) as { maxRssKb: number }).maxRssKb / 1024;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A memory amount as written in a bound: `512 MiB`, `1 GiB`, or a plain number of MiB. Undefined when it is none of these. */
export function parseMebibytes(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? value : undefined;
  const m = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(MiB|GiB)?\s*$/i.exec(value) : null;
  if (!m) return undefined;
  const n = Number(m[1]) * (m[2]?.toLowerCase() === 'gib' ? 1024 : 1);
  return n > 0 ? n : undefined;
}
