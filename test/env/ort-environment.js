// onnxruntime-node checks `data instanceof Float32Array` against the host realm's constructors;
// jest's sandbox has its own, so tensors made in tests are rejected (jest issue 2549).
// Hand the sandbox the host's typed arrays.
const { TestEnvironment } = require('jest-environment-node');

const HOST_GLOBALS = [
  'ArrayBuffer', 'SharedArrayBuffer', 'DataView', 'Buffer',
  'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array',
  'Int32Array', 'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array',
];

class OrtEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of HOST_GLOBALS) this.global[name] = globalThis[name];
  }
}

module.exports = OrtEnvironment;
