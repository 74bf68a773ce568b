// `npm run bench -- generation`: the example generation gate (examples/fortunes-llama/generation)
// as its config runs it and at targets 0.4 and 0.6, timed as a user runs it (bin/prune-gate.js),
// with the decode speed each gate reports (report.json `decode`), and the base model's greedy decoding of the 105 prompts batched and one prompt at a time. Prints JSON lines.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCalibration } from '../../src/eval/calibration';
import { greedyDecode } from '../../src/eval/generate';
import { OnnxModel } from '../../src/onnx/model';
import { createSession } from '../../src/onnx/runtime';
import type { Report } from '../../src/report/schema';

const ROOT = path.resolve(__dirname, '..', '..');
const SET = path.join(ROOT, 'examples', 'fortunes-llama', 'generation');
const MODEL = path.join(ROOT, 'examples', 'fortunes-llama', 'model.onnx');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-generation-'));
const emit = (row: Record<string, unknown>) => console.log(JSON.stringify(row));

async function main(): Promise<void> {
  for (const target of [undefined, '0.4', '0.6']) {
    const out = path.join(tmp, `gate-${target ?? 'config'}`);
    const args = [path.join(ROOT, 'bin', 'prune-gate.js'), 'run', '--config', path.join(SET, 'prune-gate.yml'), '--out', out, ...(target ? ['--target', target] : [])];
    const start = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
    const metric = (name: string) => report.metrics.find((m) => m.name === name);
    emit({
      run: 'gate',
      target: report.target,
      seconds,
      exit: r.status,
      verdict: report.verdict,
      failed: report.metrics.filter((m) => !m.pass).map((m) => m.name),
      metrics: Object.fromEntries(['rouge-l', 'token-f1', 'exact-match', 'sequence-agreement', 'agreement', 'perplexity'].map((n) => [n, { base: metric(n)?.base, candidate: metric(n)?.candidate }])),
      params: { base: report.base.params, candidate: report.candidate.params },
      decode: report.decode,
    });
  }
  const set = loadCalibration(SET, OnnxModel.read(MODEL));
  const g = set.generation!;
  const session = await createSession(MODEL);
  for (const batchSize of [set.batchSize, 1]) {
    const start = process.hrtime.bigint();
    const generations = await greedyDecode(session, g.decoder, g.prompts, { maxNewTokens: g.maxNewTokens, eos: g.eos, batchSize });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    emit({ run: 'decode', batchSize, prompts: g.prompts.length, tokens: generations.reduce((n, x) => n + x.length, 0), seconds });
  }
  await session.release();
  fs.rmSync(tmp, { recursive: true, force: true });
}

void main();
