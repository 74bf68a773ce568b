// The record of the engine's passes over the calibration set (src/util/passes.ts): what a
// matrix job keeps for the merge is given back bit for bit, a pass left out for size runs again,
// and a replay that reads other tensors than the record is refused in one line.
import { PassRecording, PassReplay } from '../src/util/passes';
import { UserError } from '../src/errors';

const stats = () => new Map([['/mlp/act', { count: 3, sum: Float64Array.of(0.1 + 0.2, -1e-300, Math.PI), sumSquares: Float64Array.of(1 / 3, 2, Number.MIN_VALUE) }]]);

test('a replay gives back each recorded result exactly, in order, and runs a pass the record left out for size', async () => {
  const big = new Float64Array(1000).map((_, i) => Math.sqrt(i));
  const recording = new PassRecording(4000); // room for the statistics, not for the 8 kB array
  expect(await recording.pass('activation statistics of /mlp/act[2]', async () => stats())).toEqual(stats());
  await recording.pass('activation covariances of /mlp/act[2]', async () => big);
  expect(recording.summary()).toEqual({ passes: 2, kept: 1, bytes: expect.any(Number) });
  const replay = PassReplay.parse(recording.serialize(), 'job-1/passes.bin');
  const first = await replay.pass<ReturnType<typeof stats>>('activation statistics of /mlp/act[2]', async () => {
    throw new Error('a recorded pass must not run');
  });
  expect(first).toEqual(stats());
  expect(first.get('/mlp/act')!.sum).toBeInstanceOf(Float64Array);
  let ran = 0;
  expect(await replay.pass('activation covariances of /mlp/act[2]', async () => (ran++, big))).toBe(big);
  expect([ran, replay.replayed()]).toEqual([1, { replayed: 1, run: 1 }]);
});

test('a replay refuses a pass that reads other tensors than the record, or one past its end, and a file that is no record', async () => {
  const recording = new PassRecording(1 << 20);
  await recording.pass('activation statistics of /mlp/act[2]', async () => stats());
  const replay = PassReplay.parse(recording.serialize(), 'job-1/passes.bin');
  await expect(replay.pass('activation statistics of /mlp/other[2]', async () => stats())).rejects.toThrow(
    new UserError('job-1/passes.bin: pass 1 here reads activation statistics of /mlp/other[2], but job 1 recorded activation statistics of /mlp/act[2]: this machine builds other models than the jobs (another prune-gate or onnxruntime?); merge with the jobs\' version on their runner type'),
  );
  await expect(replay.pass('activation statistics of /mlp/act[2]', async () => stats())).rejects.toThrow(/pass 2 here reads .*, but job 1 recorded no more passes/);
  expect(() => PassReplay.parse(Buffer.from('{"tool":"prune-gate"}'), 'job-1/passes.bin')).toThrow(/^job-1\/passes\.bin: not a (readable )?record of calibration passes/);
});
