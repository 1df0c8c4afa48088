import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ErrorCodes, IsletError } from '../../engine/index.js';
import { REPO } from '../helpers.js';

function sources(dir: string): string[] {
  return readdirSync(path.join(REPO, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(path.join(dir, entry.name)) : entry.name.endsWith('.ts') ? [path.join(dir, entry.name)] : [],
  );
}

describe('error catalogue', () => {
  const used = new Map<string, string>();
  for (const file of ['engine', 'bridge', 'sandbox-api'].flatMap(sources)) {
    if (file.endsWith('errors.ts')) continue;
    for (const [code] of readFileSync(path.join(REPO, file), 'utf8').matchAll(/ISLET_ERR_[A-Z_]+/g)) used.set(code, file);
  }

  it('errors: every code used in the source is in the catalogue, and every catalogued code is used', () => {
    expect([...used.keys()].filter((code) => !(code in ErrorCodes))).to.deep.equal([]);
    expect(Object.keys(ErrorCodes).filter((code) => !used.has(code))).to.deep.equal([]);
  });

  it('errors: every code is documented in the README', () => {
    const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
    expect(Object.keys(ErrorCodes).filter((code) => !readme.includes(`\`${code}\``))).to.deep.equal([]);
  });

  it('errors: IsletError carries its code and starts its message with it', () => {
    const error = new IsletError('ISLET_ERR_BAD_URI', 'uri "x" is not a valid URL');
    expect(error).to.be.instanceOf(Error);
    expect(error.code).to.equal('ISLET_ERR_BAD_URI');
    expect(error.message).to.equal('ISLET_ERR_BAD_URI: uri "x" is not a valid URL');
  });
});
