// Drain on shutdown: engine.close() answers new upgrades with 503, closes
// every session with 1001 (going away), runs each session's onClose before
// the workers stop, and is done within shutdownTimeoutMs even when a peer
// never answers its close frame.
import { expect } from 'chai';
import net from 'node:net';
import { connect, makeRoot, rawRequest, serveRoot, silentPeer, upgradeRequest } from '../helpers.js';

const ROOT = {
  'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
  'p/h.js': 'exports.onMessage = (m) => "got " + m;\nexports.onClose = (id) => console.log("onClose " + id);\n',
};

describe('drain on shutdown', () => {
  it('drain: every session is closed with 1001 and its onClose runs before close() resolves; a peer that never answers does not hold it past shutdownTimeoutMs', async function () {
    this.timeout(20_000);
    const s = await serveRoot(makeRoot(ROOT), { shutdownTimeoutMs: 3000 });
    const clients = await Promise.all([1, 2, 3].map(() => connect(s.url('e'))));
    for (const c of clients) c.ws.send('hi');
    await Promise.all(clients.map((c) => c.receive(1)));
    // A peer that finished its handshake and then reads nothing: it never answers the close.
    const mute = await silentPeer(s.port, '/websockets/v4/service/e');
    // And an HTTP connection that never sends its request: the server's close must not wait for it.
    const idle = net.connect(s.port, '127.0.0.1');
    idle.on('error', () => {});
    await new Promise((resolve) => idle.once('connect', resolve));
    const started = Date.now();
    const closing = s.engine.close();
    // Draining: the port still answers, with 503.
    expect(await rawRequest(s.port, upgradeRequest('/websockets/v4/service/e'))).to.match(/^HTTP\/1\.1 503 /);
    await closing;
    // The mute peer's close frame gets 1 s; nothing waits out the whole shutdownTimeoutMs.
    expect(Date.now() - started).to.be.below(2500);
    idle.destroy();
    for (const c of clients) expect(await c.closed).to.deep.equal([1001, 'islet engine closing']);
    expect(s.lines().filter((l) => l.startsWith('onClose'))).to.have.length(4);
    mute.destroy();
  });

  it('drain: onClose handlers that take longer together than one call budget all run before the workers stop', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': 'exports.onClose = (id) => { console.log("close start " + id); for (const end = Date.now() + 15; Date.now() < end; ); };\n',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 300 } });
    const clients = await Promise.all(Array.from({ length: 60 }, () => connect(s.url('e'))));
    // 60 × 15 ms: three budgets' worth, so calls are stopped and the rest put back for later turns.
    await s.engine.close();
    // Each ran, or was the one a budget stopped (before its line, if the budget ran out just as it began) and was reported.
    const ran = s.lines().filter((l) => l.startsWith('close start')).length;
    const stopped = s.errors.filter((e) => /ISLET_ERR_TIMEOUT: .*; its handler was stopped$/.test(e.error)).length;
    expect(60 - ran, JSON.stringify(s.errors)).to.be.at.most(stopped);
    // Before the workers waited for the put-back ones, 20 ran.
    expect(ran).to.be.at.least(50);
    for (const c of clients) expect((await c.closed)[0]).to.equal(1001);
  });
});
