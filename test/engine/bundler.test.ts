import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Bundler } from '../../engine/bundler.js';
import { makeRoot, settle, startEngine } from '../helpers.js';

async function runError(root: string, script: string): Promise<string> {
  const t = await startEngine(root);
  return settle(t.engine.run(script));
}

describe('bundler', () => {
  it('bundler: refuses Node built-ins, packages, other projects and paths out of the root, naming import and file', async () => {
    const root = makeRoot({
      'p/fs.js': 'const fs = require("fs");\n',
      'p/node-fs.ts': 'import { readFileSync } from "node:fs";\nreadFileSync;\n',
      'p/child.mjs': 'import "child_process";\n',
      'p/package.js': '\n\nimport lodash from "lodash";\n',
      'p/other.js': 'import "../q/lib.js";\n',
      'p/other-id.js': 'import "q/lib";\n',
      'p/escape.js': 'import "../../../../../../etc/hostname";\n',
      'q/lib.js': 'export const secret = 1;\n',
    });
    expect(await runError(root, 'p/fs.js')).to.equal(
      'ISLET_ERR_IMPORT_REFUSED: import in p/fs.js:1:20: "fs" is a Node built-in module; the sandbox has none (it offers net/v4/websockets, net/websockets, sdk/net, @aerokit/sdk/net, http/v4/response, http/response, sdk/http, @aerokit/sdk/http)',
    );
    expect(await runError(root, 'p/node-fs.ts')).to.contain('import in p/node-fs.ts:1:30: "node:fs" is a Node built-in module');
    expect(await runError(root, 'p/child.mjs')).to.contain('import in p/child.mjs:1:8: "child_process" is a Node built-in module');
    expect(await runError(root, 'p/package.js')).to.equal(
      'ISLET_ERR_IMPORT_REFUSED: import in p/package.js:3:20: "lodash" is a package or another project outside project "p"; import relative files of the project, "p/…" module ids, or net/v4/websockets, net/websockets, sdk/net, @aerokit/sdk/net, http/v4/response, http/response, sdk/http, @aerokit/sdk/http',
    );
    expect(await runError(root, 'p/other.js')).to.equal(
      'ISLET_ERR_IMPORT_REFUSED: import in p/other.js:1:8: "../q/lib.js" resolves outside project "p"; a project may only import its own files',
    );
    expect(await runError(root, 'p/other-id.js')).to.contain('import in p/other-id.js:1:8: "q/lib" is a package or another project outside project "p"');
    expect(await runError(root, 'p/escape.js')).to.equal(
      'ISLET_ERR_IMPORT_REFUSED: import in p/escape.js:1:8: "../../../../../../etc/hostname" resolves outside project "p"; a project may only import its own files',
    );
  });

  it('bundler: relative imports, Dirigible-style project ids, JSON, CommonJS and ES modules bundle together', async () => {
    const root = makeRoot({
      'p/lib/math.ts': 'export const double = (n: number): number => n * 2;\n',
      'p/lib/legacy.js': 'module.exports = { greet: (who) => "hello " + who };\n',
      'p/data.json': '{ "n": 21 }\n',
      'p/main.mjs': 'import { double } from "./lib/math";\nimport legacy from "p/lib/legacy";\nimport data from "./data.json";\nconsole.log(legacy.greet("p"), double(data.n));\n',
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.mjs');
    expect(t.lines()).to.deep.equal(['hello p 42']);
  });

  it('bundler: a syntax error names the file, line and column', async () => {
    const root = makeRoot({ 'p/broken.ts': 'const a = 1;\nconst b = ;\n' });
    expect(await runError(root, 'p/broken.ts')).to.equal('ISLET_ERR_BUNDLE: p/broken.ts:2:11: Unexpected ";"');
  });

  it('bundler: bundles are cached by the content of all their inputs', async () => {
    const root = makeRoot({ 'p/a.js': 'import { v } from "./b.js";\nconsole.log(v);\n', 'p/b.js': 'export const v = 1;\n' });
    const bundler = new Bundler(root);
    const first = await bundler.bundle('p/a.js');
    expect(await bundler.bundle('p/a.js')).to.equal(first);
    writeFileSync(path.join(root, 'p/b.js'), 'export const v = 2;\n');
    const second = await bundler.bundle('p/a.js');
    expect(second.file).not.to.equal(first.file);
    expect(second.code).to.contain('v = 2');
    writeFileSync(path.join(root, 'p/b.js'), 'export const v = 1;\n');
    expect((await bundler.bundle('p/a.js')).file).to.equal(first.file);
  });
});
