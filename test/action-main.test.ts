// The action's entry (src/main.ts) until the pipeline is wired in: it must fail the step, saying why.
import * as core from '@actions/core';
import { run } from '../src/main';

jest.mock('@actions/core');
const mocked = core as jest.Mocked<typeof core>;

test('fails the step with a clear message instead of pretending to gate', async () => {
  mocked.getInput.mockImplementation((name) => (name === 'config' ? 'models/prune-gate.yml' : ''));
  await run();
  expect(mocked.setFailed).toHaveBeenCalledWith('prune-gate run is not implemented yet (config: models/prune-gate.yml)');
});
