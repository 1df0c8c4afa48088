import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fromIsolate } from '../../bridge/errors.js';
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

  it('errors: the README\'s table is the catalogue, row for row', () => {
    const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| `(ISLET_ERR_[A-Z_]+)` \| (.*) \|$/gm)].map(([, code, text]) => [code, text]);
    expect(rows).to.deep.equal(Object.entries(ErrorCodes));
  });

  it('errors: IsletError carries its code and starts its message with it', () => {
    const error = new IsletError('ISLET_ERR_BAD_URI', 'uri "x" is not a valid URL');
    expect(error).to.be.instanceOf(Error);
    expect(error.code).to.equal('ISLET_ERR_BAD_URI');
    expect(error.message).to.equal('ISLET_ERR_BAD_URI: uri "x" is not a valid URL');
    expect(error.detail).to.equal('uri "x" is not a valid URL');
    expect(IsletError.from(error.wire)).to.deep.include({ code: 'ISLET_ERR_BAD_URI', message: error.message });
  });

  it('errors: text out of an isolate keeps a code only at its start, else is the tenant\'s uncaught error', () => {
    expect(fromIsolate('ISLET_ERR_TIMEOUT: a handler\'s promise did not settle')).to.deep.equal({ code: 'ISLET_ERR_TIMEOUT', detail: 'a handler\'s promise did not settle' });
    expect(fromIsolate('Error: ISLET_ERR_LIMIT_TIMERS: 3 timers\n    at x')).to.deep.equal({ code: 'ISLET_ERR_UNCAUGHT', detail: 'Error: ISLET_ERR_LIMIT_TIMERS: 3 timers\n    at x' });
    expect(fromIsolate('ISLET_ERR_NO_SUCH: x')).to.deep.equal({ code: 'ISLET_ERR_UNCAUGHT', detail: 'ISLET_ERR_NO_SUCH: x' });
    expect(fromIsolate('toString: a')).to.deep.equal({ code: 'ISLET_ERR_UNCAUGHT', detail: 'toString: a' });
  });
});
