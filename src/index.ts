// Entry point of the action (bundled into dist/index.js, which action.yml runs with node24).
// onnxruntime-node is not in the bundle (see src/github/onnxruntime.ts): before the pipeline is
// loaded, it is made resolvable from this file's module, installed on a cold start.
import * as core from '@actions/core';
import * as path from 'path';
import { ensureOnnxRuntime } from './github/onnxruntime';
import { run } from './main';
import { exitCleanlyOnSignals } from './util/signals';

exitCleanlyOnSignals();
void run({
  ensureRuntime: async () => {
    await ensureOnnxRuntime({ module, actionRoot: path.resolve(__dirname, '..'), log: (line) => core.info(line) });
  },
});
