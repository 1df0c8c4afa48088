// Hostile clients at the edge: malformed upgrades, resets, upgrades that never
// finish, and many connect/disconnect cycles. The host stays up and its
// counts come back to where they started.
import { expect } from 'chai';
import net from 'node:net';
import WebSocket from 'ws';
import { connect, makeRoot, rawRequest, serveRoot, startEngine, type Served } from '../helpers.js';


const upgrade = (headers: string): string =>
  `GET /websockets/v4/service/e HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${headers}\r\n`;

describe('edge', () => {
  let s: Served;
  beforeEach(async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': 'exports.onMessage = (m) => "ok " + m;',
    });
    s = await serveRoot(root, { upgradeTimeoutMs: 500 });
  });

  /** The engine's stats once they are back to `before` (sessions end in the workers within a turn), or as they are after 5 s. */
  async function statsBackTo(before: object): Promise<object> {
    let after = await s.engine.stats();
    for (let i = 0; i < 50 && JSON.stringify(after) !== JSON.stringify(before); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      after = await s.engine.stats();
    }
    return after;
  }

  async function stillServing(): Promise<void> {
    const c = await connect(s.url('e'));
    c.ws.send('ping');
    expect(await c.receive(1)).to.deep.equal(['ok ping']);
    c.ws.close();
    await c.closed;
  }

  it('edge: malformed upgrade requests get 400 and nothing else happens', async () => {
    expect(await rawRequest(s.port, upgrade('Sec-WebSocket-Version: 13\r\n'))).to.match(/^HTTP\/1\.1 400 /);
    expect(await rawRequest(s.port, upgrade('Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n'))).to.match(/^HTTP\/1\.1 400 /);
    expect(await rawRequest(s.port, upgrade('Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n'))).to.match(/^HTTP\/1\.1 400 /);
    expect(await rawRequest(s.port, 'NOT HTTP AT ALL\r\n\r\n')).to.match(/^HTTP\/1\.1 400 /);
    expect((await s.engine.stats()).sessions).to.equal(0);
    await stillServing();
  });

  it('edge: an upgrade that never finishes is dropped after upgradeTimeoutMs', async () => {
    const started = Date.now();
    const answer = await rawRequest(s.port, 'GET /websockets/v4/service/e HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs', 10_000);
    expect(answer).to.match(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(Date.now() - started).to.be.below(5000);
    await stillServing();
  });

  it('edge: abrupt TCP resets mid-handshake and mid-session leave nothing behind', async () => {
    await stillServing(); // the tenant's isolate is loaded, and stays
    const before = await s.engine.stats();
    for (let i = 0; i < 20; i++) {
      const half = net.connect(s.port, '127.0.0.1', () => {
        half.write('GET /websockets/v4/service/e HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        half.resetAndDestroy();
      });
      half.on('error', () => {});
      const c = await connect(s.url('e'));
      c.ws.send('x');
      (c.ws as unknown as { _socket: net.Socket })._socket.resetAndDestroy();
    }
    expect(await statsBackTo(before)).to.deep.equal(before);
    await stillServing();
  });

  it('edge: 10,000 connect/disconnect cycles bring sessions, isolates and handles back where they started', async function () {
    this.timeout(120_000);
    await stillServing();
    const before = await s.engine.stats();
    const cycles = 10_000;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < cycles) {
        next++;
        await new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(s.url('e'), { perMessageDeflate: false });
          ws.on('open', () => (next % 2 === 0 ? ws.close() : ws.terminate()));
          ws.on('close', () => resolve());
          ws.on('error', reject);
        });
      }
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    expect(await statsBackTo(before)).to.deep.equal(before);
    await stillServing();
  });

  it('edge: closing the engine while upgrades wait for their handlers to bundle neither hangs nor leaves a client waiting', async () => {
    const projects = 12;
    const files: Record<string, string> = {};
    for (let i = 0; i < projects; i++) {
      files[`p${i}/e.websocket`] = JSON.stringify({ handler: `p${i}/h`, endpoint: `e${i}` });
      files[`p${i}/h.js`] = `exports.onMessage = (m) => "${i} " + m;`;
    }
    const t = await startEngine(makeRoot(files));
    const server = await t.engine.listen(0, '127.0.0.1');
    const port = (server.address() as net.AddressInfo).port;
    let arrived = 0;
    let closing: Promise<void> | null = null;
    // Close as soon as every upgrade has reached the engine: their handlers are still being bundled.
    server.on('upgrade', () => {
      if (++arrived === projects) closing = t.engine.close();
    });
    const ended = Array.from(
      { length: projects },
      (_, i) =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}/websockets/v4/service/e${i}`, { perMessageDeflate: false });
          ws.on('unexpected-response', (_req, res) => resolve(`refused ${res.statusCode}`));
          ws.on('close', (code) => resolve(`closed ${code}`));
          ws.on('error', () => {});
        }),
    );
    const hung = new Promise<string>((resolve) => setTimeout(() => resolve('hung'), 10_000).unref());
    const outcomes = await Promise.race([Promise.all(ended), hung]);
    expect(outcomes, 'every client heard back').to.not.equal('hung');
    for (const outcome of outcomes as string[]) expect(outcome).to.match(/^(refused 503|closed 1001)$/);
    expect(await Promise.race([closing!.then(() => 'closed'), hung])).to.equal('closed');
  });
});
