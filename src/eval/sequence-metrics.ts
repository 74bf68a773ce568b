/**
 * Metrics of a generated token sequence against a reference, for `task: generation`
 * (docs/contracts.md; shared product contract "Generation tasks"). Both sequences are token ids
 * without the end-of-sequence token. When both are empty the pair matches (1); when only one
 * is, it does not (0).
 */

/** 1 when the generation equals the reference token for token. */
export function exactMatch(generated: readonly number[], reference: readonly number[]): number {
  return generated.length === reference.length && generated.every((t, i) => t === reference[i]) ? 1 : 0;
}

/** SQuAD-style F1 of the two as multisets of tokens: 0 when they share nothing. */
export function tokenF1(generated: readonly number[], reference: readonly number[]): number {
  if (generated.length === 0 || reference.length === 0) return generated.length === reference.length ? 1 : 0;
  const counts = new Map<number, number>();
  for (const t of reference) counts.set(t, (counts.get(t) ?? 0) + 1);
  let common = 0;
  for (const t of generated) {
    const left = counts.get(t) ?? 0;
    if (left > 0) {
      common++;
      counts.set(t, left - 1);
    }
  }
  return fMeasure(common / generated.length, common / reference.length);
}

/** ROUGE-L: the F-measure (beta 1) of the longest common subsequence's precision and recall. */
export function rougeL(generated: readonly number[], reference: readonly number[]): number {
  if (generated.length === 0 || reference.length === 0) return generated.length === reference.length ? 1 : 0;
  const lcs = longestCommonSubsequence(generated, reference);
  return fMeasure(lcs / generated.length, lcs / reference.length);
}

function fMeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

/** Length of the longest common subsequence, by dynamic programming over one row at a time. */
export function longestCommonSubsequence(a: readonly number[], b: readonly number[]): number {
  let previous = new Int32Array(b.length + 1);
  let current = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      current[j] = a[i - 1] === b[j - 1] ? previous[j - 1] + 1 : Math.max(previous[j], current[j - 1]);
    }
    [previous, current] = [current, previous];
  }
  return previous[b.length];
}

/** A generation as scored: up to, not including, its first end-of-sequence token. */
export function untilEos(tokens: readonly number[], eos: readonly number[]): number[] {
  const end = tokens.findIndex((t) => eos.includes(t));
  return end < 0 ? [...tokens] : tokens.slice(0, end);
}
