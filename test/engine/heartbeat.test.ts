// Peers that vanish or flood: a peer that completes the handshake and then
// answers nothing (no pong, no FIN, as a phone that lost signal) is dropped
// within two heartbeat intervals, its handler told and its onClose run,
// while a live client beside it stays; a peer over messagesPerSecond is
// closed with 1008 and its handler told, while a slower session carries on.
import { expect } from 'chai';
import { connect, makeRoot, serveRoot, silentPeer } from '../helpers.js';

const ROOT = {
  'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
  'p/h.js': `const ws = require("net/v4/websockets");
exports.onOpen = () => console.log("open");
exports.onMessage = (m) => {
  console.log("message " + m);
  return "got " + m;
};
exports.onError = (e) => console.log("error: " + e);
exports.onClose = () => console.log("close; sessions left: " + ws.getSessions().length);
`,
};

describe('peers that vanish or flood', () => {
  it('heartbeat: a peer that answers no ping is dropped within two intervals, onError and onClose run; a live client stays', async function () {
    this.timeout(20_000);
    const s = await serveRoot(makeRoot(ROOT), { heartbeatMs: 300 });
    const live = await connect(s.url('e'));
    const silent = await silentPeer(s.port, '/websockets/v4/service/e');
    const started = Date.now();
    await new Promise((resolve) => silent.once('close', resolve));
    expect(Date.now() - started).to.be.below(2 * 300 + 600);
    await s.waitForLine((l) => l.startsWith('close'));
    expect(s.lines()).to.deep.equal([
      'open',
      'open',
      'error: ISLET_ERR_HEARTBEAT_TIMEOUT: heartbeat timeout: the peer did not answer a ping within 300 ms; the connection was dropped',
      'close; sessions left: 1',
    ]);
    // Several intervals later the live client (ws answers pings) is still served.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    live.ws.send('still');
    expect(await live.receive(1)).to.deep.equal(['got still']);
    expect((await s.engine.stats()).sessions).to.equal(1);
  });

  it('rate limit: a peer over messagesPerSecond is closed with 1008 and its handler told; a session under it carries on', async () => {
    const s = await serveRoot(makeRoot(ROOT), { limits: { messagesPerSecond: 5 } });
    const calm = await connect(s.url('e'));
    const flood = await connect(s.url('e'));
    for (let i = 0; i < 20; i++) flood.ws.send(String(i));
    expect(await flood.closed).to.deep.equal([1008, 'message rate limit exceeded']);
    await s.waitForLine((l) => l.startsWith('close'));
    // The burst of 5 reached the handler, the rest was dropped.
    expect(s.lines().filter((l) => l.startsWith('message'))).to.deep.equal(['message 0', 'message 1', 'message 2', 'message 3', 'message 4']);
    expect(s.lines().filter((l) => l.startsWith('error'))).to.deep.equal([
      'error: ISLET_ERR_LIMIT_RATE: the peer sent more than 5 messages a second (limit messagesPerSecond); the session is closed with 1008',
    ]);
    for (let i = 0; i < 3; i++) {
      calm.ws.send(`c${i}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(await calm.receive(3)).to.deep.equal(['got c0', 'got c1', 'got c2']);
  });
});
