import * as v8 from 'v8';
import * as vm from 'vm';

/** Below this many bytes just let go, garbage is V8's to collect when it likes. */
const WORTH_COLLECTING = 64 * 2 ** 20;

let collect: (() => void) | undefined;

/**
 * A full garbage collection now, when `bytes` (what just became garbage) is worth one.
 * onnxruntime-node hands every run's outputs over in new ArrayBuffers, and a session made from
 * bytes leaves them behind; V8 frees such buffers only when its own heap, a hundred MB here, asks
 * for a collection. A tapped pass over BERT-base held the previous batch's 484 MB of covariances
 * and the 418 MB of protobuf its session was made from beside the ones in use (docs/measured.md,
 * "What a gate costs"). `gc` is V8's own, exposed by its flag (node's --expose-gc) set at run time.
 */
export function releaseGarbage(bytes: number): void {
  if (bytes < WORTH_COLLECTING) return;
  if (!collect) {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
}
