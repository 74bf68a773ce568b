// Progress lines: the elapsed time on every line, and a pass over the calibration set that says
// how far it is and how long it has left, at most every interval.
import { PassProgress, clock, withElapsed } from '../src/util/progress';

test('the elapsed time prefixes every line', () => {
  let t = 1_000_000;
  const lines: string[] = [];
  const log = withElapsed((l) => lines.push(l), () => t);
  log('reading the model');
  t += 65_400;
  log('step 2 of 5: evaluating');
  t += 3_600_000;
  log('done');
  expect(lines).toEqual(['[0:00] reading the model', '[1:05] step 2 of 5: evaluating', '[1:01:05] done']);
  expect(clock(59.9)).toBe('0:59');
});

test('a pass reports batches done of the total and the time left, at most every interval, and says when it is done', () => {
  let t = 0;
  const lines: string[] = [];
  const progress = new PassProgress('evaluating the candidate', 40, (l) => lines.push(l), { everyMs: 10_000, now: () => t });
  for (let i = 0; i < 40; i++) {
    t += 1_000; // one batch a second
    progress.tick();
  }
  expect(lines).toEqual([
    'evaluating the candidate: 10/40 batches, about 0:30 left',
    'evaluating the candidate: 20/40 batches, about 0:20 left',
    'evaluating the candidate: 30/40 batches, about 0:10 left',
    'evaluating the candidate: 40/40 batches, done',
  ]);
});

test('a pass shorter than the interval says nothing; a total known only by the pass is taken at each batch', () => {
  let t = 0;
  const lines: string[] = [];
  const quick = new PassProgress('statistics', 5, (l) => lines.push(l), { now: () => t });
  for (let i = 0; i < 5; i++) quick.tick();
  expect(lines).toEqual([]);
  const decoding = new PassProgress('generating with the base model', 0, (l) => lines.push(l), { everyMs: 1_000, now: () => t });
  for (let i = 0; i < 3; i++) {
    t += 2_000;
    decoding.tick(3);
  }
  expect(lines).toEqual(['generating with the base model: 1/3 batches, about 0:04 left', 'generating with the base model: 2/3 batches, about 0:02 left', 'generating with the base model: 3/3 batches, done']);
});
