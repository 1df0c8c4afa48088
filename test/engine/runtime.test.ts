// islet needs Node 24+. The checkout brings its own (the `node`
// devDependency); the `islet` bin hands over to it when started by an older
// Node, and refuses with a clear message where there is none to hand over to.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { CLI, makeRoot } from '../helpers.js';

/** A Node older than 24 on this machine outside the checkout (the system's), or null. */
function olderNode(): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '' || dir.includes('node_modules')) continue;
    const node = path.join(dir, 'node');
    try {
      const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
      if (Number(version.slice(1).split('.')[0]) < 24) return node;
    } catch {
      // not there
    }
  }
  return null;
}

describe('runtime', () => {
  it('runtime: the suite runs on Node 24 or newer', () => {
    expect(Number(process.versions.node.split('.')[0])).to.be.at.least(24);
  });

  it('runtime: started by an older Node, the islet bin hands over to the checkout\'s Node, or refuses naming the versions', function () {
    const old = olderNode();
    // Visible as pending, never silent: a machine whose only Node is new has nothing to hand over from.
    if (old === null) this.skip();
    const root = makeRoot({ 'p/s.js': 'console.log("on", typeof globalThis.process);' });
    const ran = spawnSync(old!, [CLI, 'run', 'p/s.js'], { cwd: root, encoding: 'utf8' });
    expect(ran.status, ran.stderr).to.equal(0);
    expect(ran.stdout).to.equal('[p] on undefined\n');
    // A copy of the bin with no checkout around it has no Node to hand over to.
    const lone = makeRoot({});
    mkdirSync(path.join(lone, 'bin'));
    copyFileSync(CLI, path.join(lone, 'bin', 'islet.js'));
    const refused = spawnSync(old!, [path.join(lone, 'bin', 'islet.js'), '--help'], { encoding: 'utf8' });
    expect(refused.status).to.equal(1);
    expect(refused.stderr).to.match(/^islet: needs Node\.js 24 or newer, and this is v\d+\.\d+\.\d+; install a current Node\.js/);
  });
});
