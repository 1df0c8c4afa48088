import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_LIMITS, DEFAULT_OPTIONS } from '../../engine/index.js';
import { REPO, runCli } from '../helpers.js';

describe('options', () => {
  it('options: the README\'s table and the CLI help list every limit with the default the engine uses', async () => {
    const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const documented = Object.fromEntries([...readme.matchAll(/^\| `limits\.(\w+)` \| (\d+) \|/gm)].map((m) => [m[1], Number(m[2])]));
    expect(documented).to.deep.equal(DEFAULT_LIMITS);
    const help = (await runCli(['--help'])).stdout.replace(/\s+/g, ' ');
    for (const [name, value] of Object.entries(DEFAULT_LIMITS)) expect(help).to.contain(`${name} (${value})`);
  });

  it('options: the README\'s table gives every numeric option the default the engine uses, and the help the ones it names', async () => {
    const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const documented = Object.fromEntries([...readme.matchAll(/^\| `(\w+)` \| (\d+) \|/gm)].map((m) => [m[1], Number(m[2])]));
    expect(documented).to.deep.equal(DEFAULT_OPTIONS);
    const help = (await runCli(['--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).to.contain(`worker processes. Default: ${DEFAULT_OPTIONS.workers}.`);
    expect(help).to.contain(`0: off. Default: ${DEFAULT_OPTIONS.heartbeatMs}.`);
    expect(help).to.contain(`how long draining may take. Default: ${DEFAULT_OPTIONS.shutdownTimeoutMs}.`);
  });
});
