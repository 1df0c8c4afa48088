import { expect } from 'chai';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { connect, makeRoot, serveRoot, startEngine, writeFiles } from '../helpers.js';

const descriptor = (handler: string, endpoint: string): string => JSON.stringify({ handler, endpoint, description: 'test' });

async function status(url: string, headers: Record<string, string> = {}): Promise<string> {
  return connect(url, { headers }).then(
    (c) => {
      c.ws.close();
      return 'open';
    },
    (e: Error) => e.message,
  );
}

describe('server endpoints', () => {
  it('endpoints: a string returned by onMessage, or a promise of one, is sent back to that session', async () => {
    const root = makeRoot({
      'p/echo.websocket': descriptor('p/echo', 'echo'),
      'p/echo.js': `
        const ws = require("net/v4/websockets");
        exports.onMessage = (m, id) => m === "later" ? new Promise((r) => setTimeout(() => r("resolved " + id), 5))
          : m === "nothing" ? undefined : "echo " + m + " " + (id === ws.getSessionId()) + " " + ws.getMethod();
      `,
    });
    const s = await serveRoot(root);
    const c = await connect(s.url('echo'));
    c.ws.send('later');
    c.ws.send('nothing');
    c.ws.send('hi');
    const [first, second] = await c.receive(2);
    expect(first).to.match(/^resolved \d+$/);
    // The promise held the session's next events back: order is kept.
    expect(second).to.equal('echo hi true onmessage');
  });

  it('endpoints: a handler broadcasts with getSessions and getSession, and sees each session open and close', async () => {
    const root = makeRoot({
      'chat/room.websocket': descriptor('chat/room', 'room'),
      'chat/room.js': `
        const ws = require("net/v4/websockets");
        exports.onOpen = (id) => console.log("open", id === ws.getSessionId(), ws.isOnOpen());
        exports.onMessage = (m, id) => {
          for (const s of ws.getSessions()) ws.getSession(s.id).send(id + ": " + m);
        };
        exports.onClose = (id) => console.log("close", ws.getSessions().some((s) => s.id === id));
      `,
    });
    const s = await serveRoot(root);
    const clients = await Promise.all([1, 2, 3].map(() => connect(s.url('room'))));
    await s.waitForLine(() => s.lines().filter((l) => l === 'open true true').length === 3);
    clients[0]!.ws.send('hello all');
    const got = await Promise.all(clients.map((c) => c.receive(1)));
    expect(new Set(got.flat()).size).to.equal(1);
    expect(got[0]![0]).to.match(/^\d+: hello all$/);
    clients[1]!.ws.close();
    await s.waitForLine((l) => l.startsWith('close'));
    expect(s.lines()).to.include('close false');
  });

  it('endpoints: a tenant never reaches another project\'s sessions, whatever id it tries', async () => {
    const root = makeRoot({
      'a/a.websocket': descriptor('a/h', 'a'),
      'a/h.js': 'exports.onMessage = (m, id) => id;',
      'b/b.websocket': descriptor('b/h', 'b'),
      'b/h.js': `
        const ws = require("net/v4/websockets");
        exports.onMessage = (victim) => {
          const direct = ws.getSession(victim);
          const listed = ws.getSessions().map((s) => s.id);
          return JSON.stringify({ direct, listed, client: ws.getClient(victim) });
        };
      `,
    });
    const s = await serveRoot(root);
    const victim = await connect(s.url('a'));
    victim.ws.send('who am i');
    const [victimId] = await victim.receive(1);
    const attacker = await connect(s.url('b'));
    attacker.ws.send(victimId!);
    const [report] = await attacker.receive(1);
    const parsed = JSON.parse(report!) as { direct: null; listed: string[]; client: null };
    expect(parsed.direct).to.equal(null);
    expect(parsed.client).to.equal(null);
    expect(parsed.listed).to.have.length(1).and.not.include(victimId);
  });

  it('endpoints: bad descriptors are reported with file and field, and the good endpoint is still served', async () => {
    const root = makeRoot({
      'good/ok.websocket': descriptor('good/h', 'ok'),
      'good/h.js': 'exports.onMessage = (m) => "ok " + m;',
      'bad/json.websocket': '{"handler": "bad/h",',
      'bad/array.websocket': '[]',
      'bad/no-handler.websocket': JSON.stringify({ endpoint: 'x1' }),
      'bad/no-endpoint.websocket': JSON.stringify({ handler: 'bad/h' }),
      'bad/name.websocket': descriptor('bad/h', 'a b/c'),
      'bad/missing.websocket': descriptor('bad/nope', 'x2'),
      'bad/foreign.websocket': descriptor('good/h', 'x3'),
      'bad/engine.websocket': JSON.stringify({ handler: 'bad/h', endpoint: 'x4', engine: 'python' }),
      'bad/h.js': '',
      'x-copy/dup.websocket': descriptor('x-copy/h', 'x5'),
      'x-copy/h.js': '',
      'good/dup.websocket': descriptor('good/h', 'x5'),
      'good/z-dup.websocket': descriptor('good/h', 'ok'),
    });
    const s = await serveRoot(root);
    const problems = s.problems.map((p) => [p.file, p.field, p.error.code, p.error.message]);
    expect(problems.map((p) => p.slice(0, 3))).to.deep.equal([
      ['bad/array.websocket', null, 'ISLET_ERR_DESCRIPTOR'],
      ['bad/engine.websocket', 'engine', 'ISLET_ERR_DESCRIPTOR'],
      ['bad/foreign.websocket', 'handler', 'ISLET_ERR_DESCRIPTOR'],
      ['bad/json.websocket', null, 'ISLET_ERR_DESCRIPTOR'],
      ['bad/missing.websocket', 'handler', 'ISLET_ERR_DESCRIPTOR'],
      ['bad/name.websocket', 'endpoint', 'ISLET_ERR_DESCRIPTOR'],
      ['bad/no-endpoint.websocket', 'endpoint', 'ISLET_ERR_DESCRIPTOR'],
      ['bad/no-handler.websocket', 'handler', 'ISLET_ERR_DESCRIPTOR'],
      ['good/dup.websocket', 'endpoint', 'ISLET_ERR_DESCRIPTOR'],
      ['good/z-dup.websocket', 'endpoint', 'ISLET_ERR_DESCRIPTOR'],
      ['x-copy/dup.websocket', 'endpoint', 'ISLET_ERR_DESCRIPTOR'],
    ]);
    const messages = problems.map((p) => p[3]);
    expect(messages[0]).to.equal('ISLET_ERR_DESCRIPTOR: bad/array.websocket: must be a JSON object like {"handler": "my-project/ws-handler", "endpoint": "my-endpoint"}');
    expect(messages[1]).to.match(/^ISLET_ERR_DESCRIPTOR: bad\/engine\.websocket: field "engine": ISLET_ERR_BAD_ENGINE: engine "python" is not supported/);
    expect(messages[2]).to.equal('ISLET_ERR_DESCRIPTOR: bad/foreign.websocket: field "handler": ISLET_ERR_BAD_HANDLER_ID: handler "good/h" belongs to project "good", not to "bad": a project may only use its own handlers');
    expect(messages[3]).to.match(/^ISLET_ERR_DESCRIPTOR: bad\/json\.websocket: not valid JSON \(/);
    expect(messages[4]).to.equal('ISLET_ERR_DESCRIPTOR: bad/missing.websocket: field "handler": ISLET_ERR_HANDLER_NOT_FOUND: handler "bad/nope" resolves to no file; tried bad/nope.js, bad/nope.ts, bad/nope.mjs under the projects root');
    expect(messages[5]).to.equal('ISLET_ERR_DESCRIPTOR: bad/name.websocket: field "endpoint": "a b/c" may only use letters, digits, ".", "_" and "-" (at most 128)');
    // Within a project the first in path order keeps an endpoint; between projects, none does.
    expect(messages[9]).to.equal('ISLET_ERR_DESCRIPTOR: good/z-dup.websocket: field "endpoint": "ok" is already served by good/ok.websocket');
    const contested = 'field "endpoint": "x5" is claimed by good/dup.websocket and x-copy/dup.websocket, of different projects; none of them is served until one gives it up';
    expect(messages[8]).to.equal(`ISLET_ERR_DESCRIPTOR: good/dup.websocket: ${contested}`);
    expect(messages[10]).to.equal(`ISLET_ERR_DESCRIPTOR: x-copy/dup.websocket: ${contested}`);
    expect(s.engine.endpoints().map((e) => e.name)).to.deep.equal(['ok']);
    const c = await connect(s.url('ok'));
    c.ws.send('still');
    expect(await c.receive(1)).to.deep.equal(['ok still']);
  });

  it('endpoints: a project cannot take over another project\'s endpoint by adding a descriptor that sorts first', async () => {
    const root = makeRoot({
      'victim/e.websocket': descriptor('victim/h', 'shared'),
      'victim/h.js': 'exports.onMessage = (m) => "victim " + m;',
      'attacker/h.js': 'exports.onMessage = (m) => "hijacked " + m;',
    });
    const s = await serveRoot(root);
    const reloaded = once(s.engine, 'reloaded');
    writeFiles(root, { 'attacker/aaa.websocket': descriptor('attacker/h', 'shared') });
    await reloaded;
    expect(s.problems.map((p) => p.error.message)).to.deep.equal([
      'ISLET_ERR_DESCRIPTOR: attacker/aaa.websocket: field "endpoint": "shared" is already served by victim/e.websocket',
    ]);
    const c = await connect(s.url('shared'));
    c.ws.send('hello');
    expect(await c.receive(1)).to.deep.equal(['victim hello']);
  });

  it('endpoints: an unknown endpoint is answered 404, another path too', async () => {
    const root = makeRoot({ 'p/e.websocket': descriptor('p/h', 'e'), 'p/h.js': '' });
    const s = await serveRoot(root);
    expect(await status(s.url('nope'))).to.equal('HTTP 404');
    expect(await status(`ws://127.0.0.1:${s.port}/elsewhere`)).to.equal('HTTP 404');
    expect(await status(s.url('e'))).to.equal('open');
  });

  it('endpoints: oversize, binary and invalid UTF-8 frames close the session with 1009, 1003 and 1007', async () => {
    const root = makeRoot({
      'p/e.websocket': descriptor('p/h', 'e'),
      'p/h.js': 'exports.onMessage = (m) => "ok " + m.length;\nexports.onError = (e) => console.log("error", e);',
    });
    const s = await serveRoot(root, { limits: { maxMessageBytes: 1000 } });
    const big = await connect(s.url('e'));
    big.ws.send('x'.repeat(1000));
    expect(await big.receive(1)).to.deep.equal(['ok 1000']);
    big.ws.send('x'.repeat(1001));
    expect((await big.closed)[0]).to.equal(1009);
    const binary = await connect(s.url('e'));
    binary.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await binary.closed).to.deep.equal([1003, 'islet endpoints take text frames only']);
    const utf8 = await connect(s.url('e'));
    utf8.ws.send(Buffer.from([0x68, 0xff, 0xfe]), { binary: false });
    expect((await utf8.closed)[0]).to.equal(1007);
    // Each of them failed alone: a new session is served.
    const after = await connect(s.url('e'));
    after.ws.send('fine');
    expect(await after.receive(1)).to.deep.equal(['ok 4']);
  });

  it('endpoints: with allowedOrigins, a page of another origin is refused with 403', async () => {
    const root = makeRoot({ 'p/e.websocket': descriptor('p/h', 'e'), 'p/h.js': '' });
    const s = await serveRoot(root, { allowedOrigins: ['http://app.test'] });
    expect(await status(s.url('e'), { Origin: 'http://evil.test' })).to.equal('HTTP 403');
    expect(await status(s.url('e'))).to.equal('HTTP 403');
    expect(await status(s.url('e'), { Origin: 'http://app.test' })).to.equal('open');
  });

  it('endpoints: a handler that fails to load closes the session with 1011 and says why', async () => {
    const root = makeRoot({ 'p/e.websocket': descriptor('p/h', 'e'), 'p/h.js': 'exports.onMessage = (m) => {;\n' });
    const s = await serveRoot(root);
    const c = await connect(s.url('e'));
    expect(await c.closed).to.deep.equal([1011, 'handler p/h failed to load']);
    expect(s.errors[0]!.error).to.match(/^ISLET_ERR_BUNDLE: p\/h\.js:2:0?\d*: /);
  });

  it('endpoints: hot reload of descriptors and handlers; open sessions carry on with the new code', async () => {
    const root = makeRoot({ 'p/e.websocket': descriptor('p/h', 'e'), 'p/h.js': 'exports.onMessage = (m) => "v1 " + m;' });
    const s = await serveRoot(root);
    const open = await connect(s.url('e'));
    open.ws.send('a');
    expect(await open.receive(1)).to.deep.equal(['v1 a']);
    const reloaded = once(s.engine, 'reloaded');
    writeFileSync(path.join(root, 'p/h.js'), 'exports.onMessage = (m) => "v2 " + m;');
    await reloaded;
    await new Promise((resolve) => setTimeout(resolve, 100));
    const fresh = await connect(s.url('e'));
    fresh.ws.send('b');
    expect(await fresh.receive(1)).to.deep.equal(['v2 b']);
    open.ws.send('c');
    expect(await open.receive(2)).to.deep.equal(['v1 a', 'v2 c']);
    // A new descriptor is served, a removed one is not; open sessions stay.
    const added = once(s.engine, 'endpoints');
    writeFiles(root, { 'p/f.websocket': descriptor('p/h', 'f') });
    await added;
    expect(await status(s.url('f'))).to.equal('open');
    const removed = once(s.engine, 'endpoints');
    rmSync(path.join(root, 'p/e.websocket'));
    await removed;
    expect(await status(s.url('e'))).to.equal('HTTP 404');
    open.ws.send('d');
    expect(await open.receive(3)).to.deep.equal(['v1 a', 'v2 c', 'v2 d']);
  });

  it('endpoints: Engine.attach serves on an existing HTTP server and leaves its other routes and upgrades alone', async () => {
    const root = makeRoot({ 'p/e.websocket': descriptor('p/h', 'e'), 'p/h.js': 'exports.onMessage = (m) => "islet " + m;' });
    const t = await startEngine(root);
    const app = http.createServer((req, res) => res.end(`app ${req.url}`));
    app.on('upgrade', (req, socket) => {
      if (req.url === '/app-socket') socket.end('HTTP/1.1 418 I\'m a teapot\r\n\r\n');
    });
    t.engine.attach(app);
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const port = (app.address() as AddressInfo).port;
    try {
      const page = await fetch(`http://127.0.0.1:${port}/hello`);
      expect(await page.text()).to.equal('app /hello');
      expect(await status(`ws://127.0.0.1:${port}/app-socket`)).to.equal('HTTP 418');
      const c = await connect(`ws://127.0.0.1:${port}/websockets/v4/service/e`);
      c.ws.send('there');
      expect(await c.receive(1)).to.deep.equal(['islet there']);
      c.ws.close();
    } finally {
      app.close();
    }
  });

  it('endpoints: project pages are served read-only, without traversal, descriptors or handler sources', async () => {
    const root = makeRoot({
      'p/e.websocket': descriptor('p/h', 'e'),
      'p/h.js': 'exports.onMessage = () => "secret handler";',
      'p/page/index.html': '<h1>chat</h1>',
      'p/page/app.js': 'console.log(1)',
      'p/lib.ts': 'export {}',
      'q/private.txt': 'q only',
    });
    const s = await serveRoot(root);
    const get = async (p: string, method = 'GET'): Promise<string> => {
      const res = await fetch(`http://127.0.0.1:${s.port}${p}`, { method });
      return `${res.status} ${res.headers.get('content-type')} ${await res.text()}`.trim();
    };
    expect(await get('/services/web/p/page/index.html')).to.equal('200 text/html; charset=utf-8 <h1>chat</h1>');
    expect(await get('/services/web/p/page/app.js')).to.equal('200 text/javascript; charset=utf-8 console.log(1)');
    expect(await get('/services/web/p/h.js')).to.match(/^403 /);
    expect(await get('/services/web/p/e.websocket')).to.match(/^403 /);
    expect(await get('/services/web/p/lib.ts')).to.match(/^403 /);
    // fetch() would normalise "..": send the raw paths.
    const raw = (p: string): Promise<number | undefined> =>
      new Promise((resolve) => http.get({ host: '127.0.0.1', port: s.port, path: p }, (res) => resolve(res.statusCode)).end());
    // Dot segments resolve inside the URL (as in a browser): they can reach
    // another project's public pages, never a file out of the root nor a handler.
    expect(await raw('/services/web/p/../q/private.txt')).to.equal(200);
    expect(await raw('/services/web/p/../../../../etc/hostname')).to.equal(404);
    expect(await raw('/services/web/%2e%2e/%2e%2e/etc/hostname')).to.equal(404);
    expect(await raw('/services/web/p/page/%2e%2e/h.js')).to.equal(403);
    expect(await raw('/services/web/p/page%2f..%2f..%2f..%2fetc%2fhostname')).to.equal(404);
    expect(await get('/services/web/p/nope.html')).to.match(/^404 /);
    expect(await get('/services/web/p/page/index.html', 'POST')).to.match(/^405 /);
  });
});
