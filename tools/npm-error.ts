// What npm says went wrong, in one line: its FetchError line (which request failed, how) or else
// its first error line (`code E...`); npm prints a dozen lines and a stack for one failure.

export function npmErrorReason(stderr: string): string | undefined {
  const errors = stderr
    .split('\n')
    .filter((l) => l.startsWith('npm error '))
    .map((l) => l.slice(10).trim());
  return errors.find((l) => l.startsWith('FetchError')) ?? errors[0];
}
