// Drain on shutdown: engine.close() answers new upgrades with 503, closes
// every session with 1001 (going away), runs each session's onClose before
// the workers stop, and is done within shutdownTimeoutMs even when a peer
// never answers its close frame.
import { expect } from 'chai';
import net from 'node:net';
import { connect, makeRoot, serveRoot } from '../helpers.js';

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
    const mute = net.connect(s.port, '127.0.0.1', () =>
      mute.write('GET /websockets/v4/service/e HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'),
    );
    await new Promise((resolve) => mute.once('data', resolve));
    mute.pause();
    mute.on('error', () => {});
    const started = Date.now();
    await s.engine.close();
    expect(Date.now() - started).to.be.below(3000 + 500);
    for (const c of clients) expect(await c.closed).to.deep.equal([1001, 'islet engine closing']);
    expect(s.lines().filter((l) => l.startsWith('onClose'))).to.have.length(4);
    mute.destroy();
  });
});
