import { repository, version } from '../../package.json';

/**
 * The one command that runs this CLI in any repository, from the major release tag (README.md,
 * "Command line"): npx installs the package from the tag's git tree (dist/ is committed, so no
 * build) and runs its `prune-gate` bin. `--ignore-scripts` keeps onnxruntime-node's install
 * script from running, as the project's .npmrc does: on linux-x64 it would download CUDA
 * libraries from NuGet, which the CPU-only CLI never loads, and fail the install offline.
 * OWNER/NAME come from package.json's `repository`, the tag from its major version.
 */
export const CLI_COMMAND = `npx --yes --ignore-scripts github:${githubRepository(repository.url)}#v${version.split('.')[0]}`;

/** OWNER/NAME of a GitHub repository URL such as git+https://github.com/OWNER/NAME.git. */
function githubRepository(url: string): string {
  const m = /github\.com[/:]([^/]+\/[^/]+?)(\.git)?$/.exec(url);
  if (!m) throw new Error(`package.json: repository.url ${url} is not a GitHub repository`);
  return m[1];
}
