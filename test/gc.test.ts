// util/gc.ts: a large buffer that has just become garbage is freed then, not when V8's own heap
// next asks for a collection (a tapped pass over BERT-base held two batches' covariances).
import { releaseGarbage } from '../src/util/gc';

function garbage(bytes: number): void {
  new Uint8Array(bytes).fill(1);
}

test('a large buffer just let go is freed at once', () => {
  const held = () => process.memoryUsage().arrayBuffers;
  const before = held();
  garbage(128 * 2 ** 20);
  releaseGarbage(128 * 2 ** 20);
  expect(held() - before).toBeLessThan(16 * 2 ** 20);
});
