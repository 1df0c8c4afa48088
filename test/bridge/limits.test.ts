import { expect } from 'chai';
import { connect, echoPeer, makeRoot, serveRoot, settle, startEngine } from '../helpers.js';

describe('tenant limits', () => {
  it('limits: a script that never yields is stopped at callTimeoutMs; the tenant and the others carry on', async () => {
    const root = makeRoot({
      'a/spin.js': 'let n = 0;\nfor (;;) n++;\n',
      'a/ok.js': 'console.log("a still works");',
      'b/ok.js': 'console.log("b was not stopped");',
    });
    const t = await startEngine(root, { limits: { callTimeoutMs: 200 } });
    const [spin, other] = await Promise.all([settle(t.engine.run('a/spin.js')), settle(t.engine.run('b/ok.js'))]);
    expect(spin).to.equal('ISLET_ERR_TIMEOUT: tenant "a" ran past its budget of 200 ms (limit callTimeoutMs); the script was stopped');
    expect(other).to.equal('no error');
    await t.engine.run('a/ok.js');
    expect(t.lines()).to.have.members(['b was not stopped', 'a still works']);
  });

  it('limits: a handler stopped at callTimeoutMs hears of it through onError, and the events queued behind it still run', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': `
        exports.onMessage = (m) => { if (m === "spin") for (;;); return "ok " + m; };
        exports.onError = (e, id) => require("net/v4/websockets").getSession(id).send("onError: " + e);
      `,
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 200 } });
    const spinner = await connect(s.url('e'));
    const bystander = await connect(s.url('e'));
    spinner.ws.send('1');
    await spinner.receive(1);
    // Sent together, these land in one batch with the spinning event.
    spinner.ws.send('spin');
    spinner.ws.send('2');
    bystander.ws.send('3');
    expect(await spinner.receive(3)).to.deep.equal([
      'ok 1',
      'onError: ISLET_ERR_TIMEOUT: tenant "p" ran past its budget of 200 ms (limit callTimeoutMs); its handler was stopped',
      'ok 2',
    ]);
    expect(await bystander.receive(1)).to.deep.equal(['ok 3']);
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
