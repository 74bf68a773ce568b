// The search's budget (src/gate/budget.ts): each step planned from what the last one cost, the
// passes that matter least left out first, and the report told which and where.
import { SearchBudget } from '../src/gate/budget';

/** A clock the test moves. */
function clock() {
  let t = 0;
  return { now: () => t * 1000, advance: (seconds: number) => (t += seconds) };
}

// One step's cost: 10 s in all, of which 2 s the alternative's confirmation, 3 s the probe and
// 4 s the statistics on the whole set (1 s of analysis and the kept candidate's confirmation).
const STEP = { total: 10, alternative: 2, probe: 3, statistics: 4, share: 1, once: 0 };

test('every step runs at full effort while the steps left fit, a probe every other step, and nothing is reported left out', () => {
  const c = clock();
  const budget = new SearchBudget(100, 5, c.now);
  for (let step = 1; step <= 5; step++) {
    // The probe is allowed at every step; the engine runs one where it is due (every other step).
    const probe = step % 2 === 1;
    expect(budget.effortFor(step, probe)).toEqual({ alternative: true, probe: true, share: 1 });
    c.advance(10);
    budget.stepDone({ ...STEP, probe: probe ? STEP.probe : 0 });
  }
  expect(budget.summary()).toEqual({ seconds: 100, spent: 50, left_out: [] });
});

test('when the steps left would not fit, the alternative goes first, then the probe, then half of the statistics', () => {
  const c = clock();
  // 5 steps of 10 s in 36 s: after step 1, 4 steps must fit in 26 s.
  const budget = new SearchBudget(36, 5, c.now);
  expect(budget.effortFor(1)).toEqual({ alternative: true, probe: true, share: 1 });
  c.advance(10);
  budget.stepDone(STEP);
  // No probe is due at step 2. 4 steps of 7 s and the probes of steps 3 and 5 (3 s each) make
  // 34 > 26; without the alternative 4 x 5 + 6 = 26 <= 26 (the probe allowed where due).
  expect(budget.effortFor(2, false)).toEqual({ alternative: false, probe: true, share: 1 });
  c.advance(5);
  budget.stepDone({ total: 5, alternative: 0, probe: 0, statistics: 4, share: 1, once: 0 });
  // 3 steps in 21 s, probes due at steps 3 and 5: 3 x 5 + 6 = 21 fits.
  expect(budget.effortFor(3, true)).toEqual({ alternative: false, probe: true, share: 1 });
  c.advance(14); // a slow step: 2 steps in 7 s
  budget.stepDone({ total: 8, alternative: 0, probe: 3, statistics: 4, share: 1, once: 0 });
  // 2 x 5 + step 5's probe = 13 > 7, without it 10 > 7; with half the statistics 2 x 3 = 6 <= 7.
  expect(budget.effortFor(4, false)).toEqual({ alternative: false, probe: false, share: 0.5 });
  c.advance(3);
  budget.stepDone({ total: 3, alternative: 0, probe: 0, statistics: 2, share: 0.5, once: 0 });
  // Step 5 may read half the set too, but its statistics were known already (collected by step
  // 4's confirmation, on the whole set): nothing of them was left out there. Its probe, due, was.
  expect(budget.effortFor(5, true)).toEqual({ alternative: false, probe: false, share: 0.5 });
  budget.stepDone({ total: 1, alternative: 0, probe: 0, statistics: 0, share: 0.5, once: 0 });
  expect(budget.summary().left_out).toEqual([
    'the confirmation of a second candidate at steps 2, 3, 4, 5',
    'half of the calibration set in the statistics pass at step 4',
    "the sensitivity probe (each group's last measured sensitivity reused) at step 5",
  ]);
});

test("the estimate of the time left is the steps to go at the last step's cost", () => {
  const c = clock();
  const budget = new SearchBudget(600, 5, c.now);
  expect(budget.remaining(0)).toBeNaN();
  budget.stepDone(STEP);
  expect(budget.remaining(1)).toBe(40);
  budget.stepDone({ ...STEP, total: 6 });
  expect(budget.remaining(2)).toBe(18);
});

test('work done once per search (the dampings chosen at the first step) is not expected of the steps after it', () => {
  const c = clock();
  // 5 steps in 75 s; the first takes 30 s, 20 of them choosing dampings no later step repeats.
  const budget = new SearchBudget(75, 5, c.now);
  budget.effortFor(1);
  c.advance(30);
  budget.stepDone({ ...STEP, total: 30, once: 20 });
  // 4 steps of 7 s and two probes of 3 s fit in the 45 s left, at full effort; counted again,
  // the 20 s would make them 4 x 27 and leave everything out.
  expect(budget.effortFor(2, false)).toEqual({ alternative: true, probe: true, share: 1 });
  c.advance(10);
  budget.stepDone({ ...STEP, probe: 0 });
  expect(budget.summary().left_out).toEqual([]);
});
