// Hazard: files in the projects root are tenants' ground. A link swapped in
// and out while a file is bundled, folders nested past the longest path,
// a handler or a descriptor of gigabytes (sparse: no disk), a link to a
// folder outside the root where files keep changing. None of them may leak
// a file, stop the host, or stall a victim tenant.
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, makeRoot, serveRoot, settle, VICTIM } from '../helpers.js';

const SECRET = 'OUTSIDE-SECRET-FOR-THE-RACE';

describe('hazard: files in the root', () => {
  it('root files: a file swapped with a link to a secret while it is bundled never leaks the secret', async function () {
    this.timeout(60_000);
    const outside = mkdtempSync(path.join(os.tmpdir(), 'islet-race-'));
    writeFileSync(path.join(outside, 'secret.txt'), SECRET);
    const root = makeRoot({ ...VICTIM, 'a/r.txt': 'benign', 'a/benign': 'benign' });
    const s = await serveRoot(root, { watch: false });
    const dir = path.join(root, 'a');
    // Another process swaps a/r.txt between a file and a link to the secret, as fast as it can.
    // In a process group of its own, so that the whole loop is killed with it.
    const flipper = spawn('timeout', ['20', 'sh', '-c',
      `cd "${dir}" && while :; do cp benign r.tmp && mv -f r.tmp r.txt; ln -sfn "${outside}/secret.txt" r.lnk && mv -Tf r.lnk r.txt; done`], { stdio: 'ignore', detached: true });
    const outcomes = new Set<string>();
    try {
      for (let i = 0; i < 200; i++) {
        writeFileSync(path.join(dir, `race${i}.js`), 'import t from "./r.txt" with { type: "text" };\nconsole.log(JSON.stringify(t));\n');
        outcomes.add((await settle(s.engine.run(`a/race${i}.js`))).replace(/race\d+/g, 'raceN'));
      }
    } finally {
      process.kill(-flipper.pid!, 'SIGKILL');
      rmSync(outside, { recursive: true, force: true });
    }
    expect(JSON.stringify([...outcomes, s.lines()])).not.to.contain(SECRET);
    expect(s.lines()).to.include('"benign"');
  });

  it('root files: folders nested past the longest path neither stop the host at a reload nor keep it from starting', async function () {
    this.timeout(60_000);
    const root = makeRoot({ ...VICTIM, 'a/h.js': '' });
    const s = await serveRoot(root);
    const victim = await connect(s.url('victim'));
    const reloaded = once(s.engine, 'reloaded');
    // Made from a process that walks down as it goes: no path names the bottom, it is too long to.
    execFileSync('python3', ['-c', [
      'import os, sys',
      'os.chdir(sys.argv[1])',
      'for i in range(2100):',
      '    os.mkdir("d"); os.chdir("d")',
      'open("x.websocket", "w").write(\'{"handler": "a/h", "endpoint": "deep"}\')',
    ].join('\n'), path.join(root, 'a')]);
    await Promise.race([reloaded, new Promise((resolve) => setTimeout(resolve, 3000))]);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    // A new host starts on the same root.
    const again = await serveRoot(root);
    const second = await connect(again.url('victim'));
    second.ws.send('2');
    expect(await second.receive(1, 2000)).to.deep.equal(['victim 2']);
    execFileSync('rm', ['-rf', path.join(root, 'a', 'd')]);
  });

  it('root files: a handler of 1.9 GB is refused at maxBundleBytes without being read, and a descriptor of 3 GB is reported by its size', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': '',
      'a/big.websocket': '',
    });
    truncateSync(path.join(root, 'a/h.js'), 1900 * 1024 * 1024);
    truncateSync(path.join(root, 'a/big.websocket'), 3 * 1024 * 1024 * 1024);
    const before = process.memoryUsage().rss;
    const s = await serveRoot(root);
    expect(s.problems.map((p) => p.error.message)).to.deep.equal([
      `ISLET_ERR_DESCRIPTOR: a/big.websocket: is ${3 * 1024 * 1024 * 1024} bytes; a descriptor may be at most 65536`,
    ]);
    const attacker = await connect(s.url('a'));
    expect(await attacker.closed).to.deep.equal([1011, 'handler a/h failed to load']);
    expect(s.errors.map((e) => e.error)).to.deep.equal([
      `ISLET_ERR_LIMIT_BUNDLE: a/h.js is ${1900 * 1024 * 1024} bytes, more than the 8388608 left of the bundle's 8388608 (limit maxBundleBytes)`,
    ]);
    expect(process.memoryUsage().rss - before).to.be.below(200 * 1024 * 1024);
    const victim = await connect(s.url('victim'));
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
  });

  it('root files: a link to a folder outside the root, where sources keep changing, does not make the host reload', async function () {
    this.timeout(30_000);
    const outside = mkdtempSync(path.join(os.tmpdir(), 'islet-outside-watch-'));
    const root = makeRoot({ ...VICTIM });
    mkdirSync(path.join(root, 'a'));
    symlinkSync(outside, path.join(root, 'a', 'lnk'));
    const s = await serveRoot(root);
    let reloads = 0;
    s.engine.on('reloaded', () => reloads++);
    try {
      for (let i = 0; i < 20; i++) {
        writeFileSync(path.join(outside, `f${i % 3}.js`), `// ${i}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(reloads).to.equal(0);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
