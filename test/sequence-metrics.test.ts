// Generation metrics on token ids, against values worked out by hand (docs/contracts.md).
import { exactMatch, longestCommonSubsequence, rougeL, tokenF1, untilEos } from '../src/eval/sequence-metrics';

test('exact match: the same tokens in the same order', () => {
  expect(exactMatch([5, 6, 7], [5, 6, 7])).toBe(1);
  expect(exactMatch([5, 6, 7], [5, 7, 6])).toBe(0);
  expect(exactMatch([5, 6], [5, 6, 7])).toBe(0);
});

test('token F1 counts shared tokens as multisets', () => {
  // shared {2, 4}: P = 2/4, R = 2/3, F1 = 2·(1/2)(2/3) / (1/2 + 2/3) = 4/7
  expect(tokenF1([1, 2, 3, 4], [2, 4, 5])).toBeCloseTo(4 / 7, 12);
  // [1, 1, 2] and [1, 2, 2] share one 1 and one 2: P = R = 2/3
  expect(tokenF1([1, 1, 2], [1, 2, 2])).toBeCloseTo(2 / 3, 12);
  // order does not matter to F1
  expect(tokenF1([3, 2, 1], [1, 2, 3])).toBe(1);
  expect(tokenF1([1, 2], [3, 4])).toBe(0);
});

test('ROUGE-L is the F-measure of the longest common subsequence', () => {
  // LCS [1, 3, 5] = 3: P = 3/5, R = 3/4, F = 2·0.45 / 1.35 = 2/3
  expect(longestCommonSubsequence([1, 2, 3, 4, 5], [1, 3, 5, 6])).toBe(3);
  expect(rougeL([1, 2, 3, 4, 5], [1, 3, 5, 6])).toBeCloseTo(2 / 3, 12);
  // order matters: [7, 8] against [8, 7] shares a subsequence of 1, P = R = 1/2
  expect(rougeL([7, 8], [8, 7])).toBe(0.5);
  expect(rougeL([1, 2], [3, 4])).toBe(0);
  expect(rougeL([4, 5, 6], [4, 5, 6])).toBe(1);
});

test('empty sequences: both empty match (1), one empty does not (0)', () => {
  for (const metric of [exactMatch, tokenF1, rougeL]) {
    expect(metric([], [])).toBe(1);
    expect(metric([], [1])).toBe(0);
    expect(metric([1], [])).toBe(0);
  }
});

test('a generation is scored up to its first end-of-sequence token, one id or several', () => {
  expect(untilEos([4, 5, 2, 6], [2])).toEqual([4, 5]);
  expect(untilEos([4, 5, 6], [2])).toEqual([4, 5, 6]);
  expect(untilEos([9, 3, 4, 1], [1, 3])).toEqual([9]);
  expect(untilEos([2], [2])).toEqual([]);
});
