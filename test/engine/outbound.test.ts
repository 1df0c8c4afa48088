import { expect } from 'chai';
import { Engine } from '../../engine/index.js';
import { echoPeer, makeRoot, type Peer, runCli, seedProject, startEngine } from '../helpers.js';

const HANDLER = 'exports.onOpen = () => console.log("open");\nexports.onError = (e) => console.log("error", e);\nexports.onClose = () => console.log("close");\n';

describe('outbound policy', () => {
  let peer: Peer;
  beforeEach(async () => {
    peer = await echoPeer();
  });
  afterEach(() => peer.close());

  function connectTo(uri: string): Record<string, string> {
    return { 'p/h.js': HANDLER, 'p/main.js': `require("net/v4/websockets").createWebsocket(${JSON.stringify(uri)}, "p/h");` };
  }

  it('outbound: by default the engine refuses loopback, private, NAT64, 6to4 and IPv4-compatible addresses, by address and by name, without connecting', async () => {
    const port = new URL(peer.url).port;
    for (const [uri, why] of [
      [peer.url, `127.0.0.1 is a loopback address`],
      [`ws://localhost:${port}/`, `localhost resolves to 127.0.0.1, which is a loopback address`],
      [`ws://[::1]:${port}/`, `::1 is a loopback address`],
      ['ws://169.254.169.254/latest/meta-data/', '169.254.169.254 is a link-local address (cloud metadata lives here)'],
      ['ws://10.1.2.3/', '10.1.2.3 is a private address'],
      ['ws://[::ffff:192.168.0.1]/', '::ffff:c0a8:1 is a private address'],
      [`ws://[::127.0.0.1]:${port}/`, '::7f00:1 is an IPv4-compatible address (it embeds an IPv4 address)'],
      [`ws://[64:ff9b::127.0.0.1]:${port}/`, '64:ff9b::7f00:1 is a NAT64 address (it embeds an IPv4 address)'],
      ['ws://[64:ff9b:1::a00:1]/', '64:ff9b:1::a00:1 is a local-use NAT64 address (it embeds an IPv4 address)'],
      ['ws://[2002:7f00:1::]/', '2002:7f00:1:: is a 6to4 address (it embeds an IPv4 address)'],
      ['ws://[2001::1]/', '2001::1 is a Teredo address (it embeds an IPv4 address)'],
      ['ws://[::ffff:0:7f00:1]/', '::ffff:0:7f00:1 is an IPv4-translated address (it embeds an IPv4 address)'],
      ['ws://[100::1]/', '100::1 is a discard-only address'],
      ['ws://[fec0::1]/', 'fec0::1 is a site-local (private) address'],
    ]) {
      const t = await startEngine(makeRoot(connectTo(uri!)), { outbound: {} });
      await t.engine.run('p/main.js');
      expect(t.lines(), uri).to.deep.equal([
        `error ISLET_ERR_OUTBOUND_DENIED: connection to ${uri} refused by the outbound policy: ${why} (see the outbound option, or --allow-private / --allow-host)`,
        'close',
      ]);
    }
    expect(peer.connections).to.have.length(0);
  });

  it('outbound: the allow list opens a host or range; the deny list wins over everything', async () => {
    const port = new URL(peer.url).port;
    const allowed = await startEngine(makeRoot(connectTo(`ws://localhost:${port}/`)), { outbound: { allow: ['127.0.0.0/8'] } });
    const run = allowed.engine.run('p/main.js');
    await allowed.waitForLine((l) => l === 'open');
    expect(peer.connections).to.have.length(1);
    peer.connections[0]!.close();
    await run;
    const denied = await startEngine(makeRoot(connectTo(peer.url)), { outbound: { allowPrivate: true, deny: ['localhost', '127.0.0.1/32'] } });
    await denied.engine.run('p/main.js');
    expect(denied.lines()[0]).to.equal(
      `error ISLET_ERR_OUTBOUND_DENIED: connection to ${peer.url} refused by the outbound policy: 127.0.0.1 is on the deny list (see the outbound option, or --allow-private / --allow-host)`,
    );
    expect(peer.connections).to.have.length(1);
  });

  it('outbound: a bad list entry is refused when the engine is made', () => {
    expect(() => new Engine({ root: makeRoot({}), outbound: { allow: ['not a host!'] } })).to.throw(
      'ISLET_ERR_BAD_OPTION: outbound.allow: "not a host!" is not a host, an address or a CIDR range',
    );
  });

  it('outbound: islet run reaches loopback by default, and refuses it with --deny-private', async () => {
    const root = makeRoot(seedProject(peer.url));
    const allowed = await runCli(['run', 'my-project/client.js'], { cwd: root });
    expect(allowed.stdout).to.match(/^\[my-project my-project\/ws-handler#\d+\] Message received: hello$/m);
    const denied = await runCli(['run', 'my-project/client.js', '--deny-private'], { cwd: root });
    expect(denied.stderr).to.contain(`] Error: ISLET_ERR_OUTBOUND_DENIED: connection to ${peer.url} refused by the outbound policy: 127.0.0.1 is a loopback address`);
    expect(denied.stderr).to.match(/^\[my-project my-project\/ws-handler#\d+\] Error: ISLET_ERR_OUTBOUND_DENIED/m);
    expect(denied.code).to.equal(0);
    expect(peer.received).to.deep.equal(['hello']);
  });
});
