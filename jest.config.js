/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: '<rootDir>/test/env/ort-environment.js',
  // Transpile only (isolatedModules): `npm test` type-checks the whole project once with tsc first.
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.jest.json' }] },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  moduleFileExtensions: ['ts', 'js', 'json'],
  testTimeout: 120000,
};
