import * as os from 'os';
import { version } from '../../package.json';
import { ort, sessionThreads } from '../onnx/runtime';

/** What the figures were measured on (report.json `environment`, docs/contracts.md). */
export interface Environment {
  cpu: string;
  cores: number;
  /** onnxruntime's intra-op threads: the device's (config device.threads), else every core. */
  threads: number;
  onnxruntime: string;
  'prune-gate': string;
}

export function currentEnvironment(): Environment {
  const cpus = os.cpus();
  const cores = cpus.length;
  return {
    cpu: cpus[0]?.model.trim() || os.arch(),
    cores,
    threads: sessionThreads() ?? cores,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    'prune-gate': version,
  };
}
