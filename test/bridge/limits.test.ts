import { expect } from 'chai';
import { echoPeer, makeRoot, settle, startEngine } from '../helpers.js';

describe('tenant limits', () => {
  it('limits: a script that never yields is stopped at callTimeoutMs; the tenant and the others carry on', async () => {
    const root = makeRoot({
      'a/spin.js': 'let n = 0;\nfor (;;) n++;\n',
      'a/ok.js': 'console.log("a still works");',
      'b/ok.js': 'console.log("b was not stopped");',
    });
    const t = await startEngine(root, { limits: { callTimeoutMs: 200 } });
    const [spin, other] = await Promise.all([settle(t.engine.run('a/spin.js')), settle(t.engine.run('b/ok.js'))]);
    expect(spin).to.equal('ISLET_ERR_TIMEOUT: tenant "a" ran past its budget of 200 ms (limit callTimeoutMs); the events of that call were dropped');
    expect(other).to.equal('no error');
    await t.engine.run('a/ok.js');
    expect(t.lines()).to.have.members(['b was not stopped', 'a still works']);
  });

  it('limits: a tenant over its heap limit loses its isolate, which comes back with its handler and open client', async () => {
    const peer = await echoPeer();
    try {
      const root = makeRoot({
        'p/h.js': 'let count = 0;\nexports.onMessage = (m) => console.log("echo", m, "count", ++count);\n',
        'p/connect.js': `globalThis.client = require("net/v4/websockets").createWebsocket("${peer.url}", "p/h"); client.send("before");`,
        'p/grow.js': 'const hoard = [];\nfor (;;) hoard.push(new Array(100000).fill(1));\n',
        'p/after.js': `
          const ws = require("net/v4/websockets");
          console.log("globals reset:", typeof globalThis.client);
          const c = ws.getClientByHandler("p/h");
          c.send("after");
          setTimeout(() => c.close(), 200);
        `,
      });
      const t = await startEngine(root, { limits: { memoryMiB: 16 } });
      const connected = t.engine.run('p/connect.js');
      await t.waitForLine((l) => l === 'echo before count 1');
      expect(await settle(t.engine.run('p/grow.js'))).to.equal(
        'ISLET_ERR_MEMORY_LIMIT: tenant "p" ran out of its 16 MiB heap (limit memoryMiB); its isolate was discarded and is recreated on its next event',
      );
      // connect.js was pending on its client when the isolate went: it failed with it.
      expect(await settle(connected)).to.match(/^ISLET_ERR_MEMORY_LIMIT/);
      await t.engine.run('p/after.js');
      expect(t.lines()).to.deep.equal(['echo before count 1', 'globals reset: undefined', 'echo after count 1']);
      expect(peer.received).to.deep.equal(['before', 'after']);
    } finally {
      await peer.close();
    }
  });
});

describe('sandbox workers', () => {
  it('workers: with workers 2, two worker processes start and tenants on them are served', async () => {
    const root = makeRoot({ 'a/x.js': 'console.log("a");', 'b/x.js': 'console.log("b");' });
    const t = await startEngine(root, { workers: 2 });
    const pids = t.engine.workerPids;
    expect(pids).to.have.length(2);
    expect(new Set(pids).size).to.equal(2);
    await Promise.all([t.engine.run('a/x.js'), t.engine.run('b/x.js')]);
    await t.engine.run('a/x.js');
    expect(t.logs.map((l) => l.tenant).sort()).to.deep.equal(['a', 'a', 'b']);
  });
});
