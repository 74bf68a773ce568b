// The one-line message of the UserError `fn` throws (a user's mistake: exit 2, one line).
import { UserError } from '../../src/errors';

export function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}
