import * as fs from 'fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors';

/**
 * Token ids as text, for the few decoded examples the report shows (a generation set's
 * `tokenizer`): "bytes" for byte-level models, or a Hugging Face tokenizer.json read with
 * @huggingface/tokenizers. The metrics never use it: they compare token ids.
 */
export type TokenText = (ids: readonly number[]) => string;

/** Parses tokenizer.json at `file`; `where` names it in the one-line error. */
export function readTokenizer(file: string, where: string): Tokenizer {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `not valid JSON (${(e as Error).message.split('\n')[0]})`;
    throw new UserError(`${where}: ${file}: ${why}; name a Hugging Face tokenizer.json, or "bytes"`);
  }
  try {
    return new Tokenizer(json as object, {});
  } catch (e) {
    throw new UserError(`${where}: ${file}: not a tokenizer this tool can read (${String((e as Error).message ?? e).split('\n')[0]}); name a Hugging Face tokenizer.json, or "bytes"`);
  }
}

/** The decoder of a set's `tokenizer` ('bytes' or a tokenizer.json path). */
export function tokenText(tokenizer: string): TokenText {
  if (tokenizer === 'bytes') return (ids) => Buffer.from(ids.map((id) => id & 0xff)).toString('utf8');
  const t = readTokenizer(tokenizer, 'tokenizer');
  return (ids) => t.decode([...ids], { skip_special_tokens: false });
}
