/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: '<rootDir>/test/env/ort-environment.js',
  // Transpile only (isolatedModules): `npm test` type-checks the whole project once with tsc first.
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.jest.json' }] },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  moduleFileExtensions: ['ts', 'js', 'json'],
  testTimeout: 120000,
  // Two workers on two cores: most of a test file's time is onnxruntime and child processes, so
  // jest's default (one worker for two cores) left a core idle; measured 346 s against 226 s for
  // the whole suite on the 2-core machine. Timings are never asserted, so sharing the cores is safe.
  maxWorkers: 2,
};
