import { expect } from 'chai';
import { bulkMessage, bulkReplies, bulkRoot, connect, echoPeer, makeRoot, runCli, serveRoot, settle, startEngine } from '../helpers.js';

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

  it('limits: a handler promise that never settles holds its session for settleTimeoutMs at most; onError hears of it', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': `
        exports.onMessage = (m) => m === "hang" ? new Promise(() => {}) : "ok " + m;
        exports.onError = (e, id) => require("net/v4/websockets").getSession(id).send("onError: " + e);
      `,
    });
    const s = await serveRoot(root, { limits: { settleTimeoutMs: 300 } });
    const c = await connect(s.url('e'));
    c.ws.send('hang');
    c.ws.send('after');
    expect(await c.receive(2)).to.deep.equal([
      "onError: ISLET_ERR_TIMEOUT: a handler's promise did not settle within 300 ms (limit settleTimeoutMs); the socket's next events go on",
      'ok after',
    ]);
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

describe('host limits', () => {
  it('limits: a peer that never reads gets at most maxQueuedBytes queued; the tenant is told once and its messages are dropped', async () => {
    const slow = await echoPeer((ws) => (ws as unknown as { _socket: { pause(): void } })._socket.pause());
    try {
      const root = makeRoot({
        'p/h.js': `
          const ws = require("net/v4/websockets");
          const chunk = "x".repeat(64 * 1024);
          exports.onOpen = (id) => { for (let i = 0; i < 400; i++) ws.getClient(id).send(chunk); setTimeout(() => ws.getClient(id).close(), 300); };
          exports.onError = (e) => console.log(e);
        `,
        'p/main.js': `require("net/v4/websockets").createWebsocket("${slow.url}", "p/h");`,
      });
      const t = await startEngine(root, { limits: { maxQueuedBytes: 1024 * 1024 } });
      const run = t.engine.run('p/main.js');
      await t.waitForLine((l) => l.startsWith('ISLET_ERR_LIMIT_QUEUED'));
      // The close frame waits behind the queue too; the peer going away ends it.
      await new Promise((resolve) => setTimeout(resolve, 400));
      slow.connections[0]!.terminate();
      await run;
      const errors = t.lines();
      expect(errors).to.have.length(1);
      expect(errors[0]).to.match(
        /^ISLET_ERR_LIMIT_QUEUED: \d+ bytes already wait to be sent on client \d+, whose peer is not reading \(limit maxQueuedBytes 1048576\); messages are dropped until it drains$/,
      );
    } finally {
      await slow.close();
    }
  });

  it('limits: a client flooding a busy tenant is slowed by TCP, not buffered in the host; every message still arrives, in order', async function () {
    this.timeout(60_000);
    const s = await serveRoot(bulkRoot(1500), { limits: { callTimeoutMs: 5000 } });
    const client = await connect(s.url('e'));
    client.ws.send('busy');
    await new Promise((resolve) => setTimeout(resolve, 100));
    // 32 MiB while the handler is busy: far more than the host lets wait for a
    // worker, so it stops reading and what is left stays with the client.
    const count = 512;
    for (let i = 0; i < count; i++) client.ws.send(bulkMessage(i, 64 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(client.ws.bufferedAmount, 'bytes the client could not send yet').to.be.greaterThan(4 * 1024 * 1024);
    const replies = await client.receive(count + 1, 30_000);
    expect(replies).to.deep.equal(['was busy', ...bulkReplies(count, 64 * 1024)]);
  });

  it('limits: maxSessions refuses a tenant\'s next session with 503; maxBundleBytes refuses a bundle too big', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': 'exports.onMessage = (m) => m;',
      'p/big.js': `const blob = "${'x'.repeat(5000)}";\nconsole.log(blob.length);`,
    });
    const s = await serveRoot(root, { limits: { maxSessions: 2, maxBundleBytes: 4096 } });
    const open = [await connect(s.url('e')), await connect(s.url('e'))];
    const third = await connect(s.url('e')).then(() => 'open', (e: Error) => e.message);
    expect(third).to.equal('HTTP 503');
    open[0]!.ws.close();
    await open[0]!.closed;
    await new Promise((resolve) => setTimeout(resolve, 50));
    (await connect(s.url('e'))).ws.close();
    // A file over the limit is refused before it is read; a bundle that grows past it once built, after.
    expect(await settle(s.engine.run('p/big.js'))).to.match(/^ISLET_ERR_LIMIT_BUNDLE: p\/big\.js is \d+ bytes, more than the 4096 left of the bundle's 4096 \(limit maxBundleBytes\)$/);
  });

  it('limits: islet run takes --limit NAME=VALUE, and names a bad one', async () => {
    const root = makeRoot({ 'p/t.js': 'for (let i = 0; i < 3; i++) setTimeout(() => {}, 1);' });
    const limited = await runCli(['run', 'p/t.js', '--limit', 'maxTimers=2'], { cwd: root });
    expect(limited.code).to.equal(1);
    expect(limited.stderr).to.contain('ISLET_ERR_LIMIT_TIMERS: tenant "p" already has 2 timers (limit maxTimers)');
    const bogus = await runCli(['run', 'p/t.js', '--limit', 'bogus=1'], { cwd: root });
    expect(bogus.code).to.equal(1);
    expect(bogus.stderr).to.contain('ISLET_ERR_BAD_OPTION: limits.bogus is not a limit; known: memoryMiB, wasmMemoryMiB, callTimeoutMs');
    const tooShort = await runCli(['run', 'p/t.js', '--limit', 'callTimeoutMs=5'], { cwd: root });
    expect(tooShort.code).to.equal(1);
    expect(tooShort.stderr).to.contain('ISLET_ERR_BAD_OPTION: limits.callTimeoutMs must be an integer from 10 to 3600000, got 5');
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
