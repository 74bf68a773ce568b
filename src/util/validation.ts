import type { z } from 'zod';
import { UserError } from '../errors';

/**
 * Schema problems as one line each, naming the file, the key path and what is wrong, with a
 * "did you mean" for misspelt keys: how every file a user writes (config, calibration.json,
 * samples.jsonl) reports its mistakes.
 */

/** `prune.target`, `gate.accuracy.max-drop`, `inputs.input_ids`, `[3]` for array items. */
export function keyPath(parts: readonly PropertyKey[]): string {
  let out = '';
  for (const p of parts) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Levenshtein distance, for "did you mean" hints on misspelt keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

export function closest(word: string, choices: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of choices) {
    const d = distance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  // Two edits (a swap of neighbours is two) is a likely typo; more is a different word.
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) && bestD < word.length ? best : undefined;
}

const TYPE_WORDS: Record<string, string> = { object: 'a mapping', array: 'a list', string: 'a string', number: 'a number', boolean: 'true or false' };

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

/** The keys a strict object schema accepts at `at` (for "did you mean"). */
function knownKeys(schema: z.ZodType, at: readonly PropertyKey[]): string[] {
  let s: unknown = schema;
  for (const p of at) {
    s = unwrap(s);
    const shape = (s as { shape?: Record<string, unknown> }).shape;
    if (!shape || typeof p !== 'string') return [];
    s = shape[p];
  }
  s = unwrap(s);
  const shape = (s as { shape?: Record<string, unknown> } | undefined)?.shape;
  return shape ? Object.keys(shape) : [];
}

function unwrap(s: unknown): unknown {
  // optional / default / nullable wrappers keep the inner schema in def.innerType
  let cur = s as { def?: { innerType?: unknown } } | undefined;
  while (cur?.def?.innerType) cur = cur.def.innerType as typeof cur;
  return cur;
}

/**
 * One line naming the file, the key path and what is wrong, e.g.
 * "prune-gate.yml: prune.targt: unknown key (did you mean target?)".
 */
export function formatIssue(file: string, issue: z.core.$ZodIssue, schema?: z.ZodType): string {
  const where = keyPath(issue.path);
  const at = (p: string) => `${file}: ${p ? `${p}: ` : ''}`;
  switch (issue.code) {
    case 'unrecognized_keys': {
      const key = issue.keys[0];
      const hint = schema ? closest(key, knownKeys(schema, issue.path)) : undefined;
      return `${at(keyPath([...issue.path, key]))}unknown key${hint ? ` (did you mean ${hint}?)` : ''}`;
    }
    case 'invalid_type': {
      const expected = issue.message.startsWith('Invalid input') ? (TYPE_WORDS[issue.expected] ?? issue.expected) : issue.message;
      if (issue.input === undefined) return `${at(where)}missing (expected ${expected})`;
      return `${at(where)}expected ${expected}, found ${describe(issue.input)}`;
    }
    case 'invalid_value':
      if (!issue.message.startsWith('Invalid')) return `${at(where)}${issue.message}`;
      return `${at(where)}${describe(issue.input)} is not one of ${issue.values.map(String).join(', ')}`;
    default:
      return `${at(where)}${issue.message}${issue.input !== undefined && !issue.message.includes('found') ? ` (found ${describe(issue.input)})` : ''}`;
  }
}

/** Parses `data` with `schema`, or throws a UserError naming the first problem. */
export function parseWith<S extends z.ZodType>(schema: S, data: unknown, file: string): z.output<S> {
  const r = schema.safeParse(data, { reportInput: true });
  if (r.success) return r.data;
  throw new UserError(formatIssue(file, r.error.issues[0], schema));
}
