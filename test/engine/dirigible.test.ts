// Real Dirigible projects, unchanged but for the port: the template-websocket
// project as Dirigible's template writes it out (client script, client
// handler, service handler, descriptor), under `islet run` and under
// `GET /services/js/…` from a real Chromium; a TypeScript project on the
// newest SDK's ids; and the response module's errors.
import { expect } from 'chai';
import { symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { connect, launchChromium, makeRoot, runCli, serveRoot, settle, startEngine, VICTIM } from '../helpers.js';

/** Dirigible's template-websocket (v4 generation) with projectName "demo" and fileName "ws-demo"; the client script's port is the test server's. */
function templateProject(port: number): Record<string, string> {
  return {
    'demo/ws-demo.websocket': `{
    "handler":"demo/ws-demo-service-handler.js",
    "endpoint":"ws-demo",
    "description":"ws-demo WebSocket"
}`,
    'demo/ws-demo-service-handler.js': `export function onOpen()  {
  console.log("Service connection openned at ws-demo service.");
}

export function onMessage(message) {
  console.log("Message received by the ws-demo service: " + message);
}

export function onError(error) {
  console.error("Error in ws-demo service: " + error);
}

export function onClose() {
  console.warn("Service connection closed at ws-demo service.");
}
`,
    'demo/ws-demo-client-handler.js': `export function onOpen()  {
  console.log("Client connection openned at ws-demo client.");
}

export function onMessage(message) {
  console.log("Message received by the ws-demo client: " + message);
}

export function onError(error) {
  console.error("Error in ws-demo client: " + error);
}

export function onClose() {
  console.warn("Client connection closed at ws-demo client.");
}
`,
    'demo/ws-demo-client.js': `var websockets = require("net/v4/websockets");
var response = require("http/v4/response");

var uri = "ws://localhost:${port}/websockets/v4/service/ws-demo";
var handler = "demo/ws-demo-client-handler"

function initialize() {
    console.log("Connect to: " + uri);
    var websocket = websockets.createWebsocket(uri, handler);
    websocket.send("hello");
}

initialize();

websockets.getClientByHandler(handler).close();

response.println("ws-demo executed successfully, please check the console logs for details.");
response.flush();
response.close();
`,
  };
}

const SERVICE_LINES = ['Service connection openned at ws-demo service.', 'Message received by the ws-demo service: hello', 'Service connection closed at ws-demo service.'];

describe('Dirigible projects', () => {
  it('template-websocket: the client script runs under islet run, prints its response untagged, and the service hears hello', async function () {
    this.timeout(60_000);
    const root = makeRoot({ 'demo/.keep': '' });
    const s = await serveRoot(root);
    for (const [file, text] of Object.entries(templateProject(s.port))) writeFileSync(path.join(root, file), text);
    await new Promise((resolve) => s.engine.once('endpoints', resolve));
    const result = await runCli(['run', 'demo/ws-demo-client.js', '--root', root], { cwd: root });
    expect(result.stderr).to.equal('[demo demo/ws-demo-client-handler#65536] Client connection closed at ws-demo client.\n');
    expect(result.code).to.equal(0);
    expect(result.stdout.split('\n')).to.deep.equal([
      `[demo] Connect to: ws://localhost:${s.port}/websockets/v4/service/ws-demo`,
      'ws-demo executed successfully, please check the console logs for details.',
      '[demo demo/ws-demo-client-handler#65536] Client connection openned at ws-demo client.',
      '',
    ]);
    await s.waitForLine((l) => l.startsWith('Service connection closed'));
    expect(s.lines()).to.deep.equal(SERVICE_LINES);
  });

  it('template-websocket: Chromium opens /services/js/demo/ws-demo-client.js and reads the response; the service hears hello', async function () {
    this.timeout(60_000);
    const root = makeRoot({ 'demo/.keep': '' });
    const s = await serveRoot(root);
    for (const [file, text] of Object.entries(templateProject(s.port))) writeFileSync(path.join(root, file), text);
    await new Promise((resolve) => s.engine.once('endpoints', resolve));
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const answer = await page.goto(`http://127.0.0.1:${s.port}/services/js/demo/ws-demo-client.js`);
      expect(answer?.status()).to.equal(200);
      expect(await page.innerText('body')).to.equal('ws-demo executed successfully, please check the console logs for details.\n');
    } finally {
      await browser.close();
    }
    await s.waitForLine((l) => l.startsWith('Service connection closed'));
    expect(s.lines().filter((l) => l.includes('ws-demo service'))).to.deep.equal(SERVICE_LINES);
    expect(s.lines()).to.include.members([`Connect to: ws://localhost:${s.port}/websockets/v4/service/ws-demo`, 'Client connection openned at ws-demo client.']);
    expect(s.errors).to.deep.equal([]);
  });

  it('a TypeScript project on @aerokit/sdk/net: Websockets is websockets, an ES-module handler returns its reply, the script answers over HTTP', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      'chat/chat.websocket': '\uFEFF{"handler": "chat/handler.ts", "endpoint": "chat", "createdBy": "admin", "createdAt": 1767225600000, "location": "/chat/chat.websocket"}',
      'chat/handler.ts': `
        import { Websockets, websockets } from "@aerokit/sdk/net";
        export function onMessage(message: string, from: string): string {
          return (Websockets === websockets ? "same " : "other ") + message.toUpperCase() + " to " + Websockets.getSessions().length;
        }
      `,
      'chat/status.ts': `
        import { Websockets } from "@aerokit/sdk/net";
        import { response } from "sdk/http";
        response.setContentType("application/json");
        response.setHeader("X-Sessions", String(Websockets.getSessions().length));
        response.print(JSON.stringify(Websockets.getSessions().map((s) => s.endpoint)));
      `,
      ...VICTIM,
    });
    const s = await serveRoot(root);
    expect(s.problems).to.deep.equal([]);
    const peer = await connect(s.url('chat'));
    peer.ws.send('hi');
    expect(await peer.receive(1)).to.deep.equal(['same HI to 1']);
    const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/chat/status.ts`);
    expect(answer.status).to.equal(200);
    expect(answer.headers.get('content-type')).to.equal('application/json');
    expect(answer.headers.get('x-sessions')).to.equal('1');
    expect(await answer.text()).to.equal('["chat"]');
  });

  it('a handler id that ends in .js resolves as in Dirigible', async () => {
    const s = await serveRoot(makeRoot({ 'p/e.websocket': '{"handler": "p/sub/h.js", "endpoint": "e"}', 'p/sub/h.js': 'exports.onMessage = (m) => "got " + m;' }));
    expect(s.engine.endpoints().map((e) => e.handler)).to.deep.equal(['p/sub/h.js']);
    const peer = await connect(s.url('e'));
    peer.ws.send('x');
    expect(await peer.receive(1)).to.deep.equal(['got x']);
  });

  it('response: each id gives it; status, headers and bytes reach the HTTP answer; framing headers stay the host\'s', async () => {
    const s = await serveRoot(
      makeRoot({
        'p/all.js': `
          const v4 = require("http/v4/response"), old = require("http/response");
          const { response, Response } = require("sdk/http"), aerokit = require("@aerokit/sdk/http").response;
          v4.print(v4 === old && response === Response && aerokit === response ? "one object" : "several");
          old.println("");
          response.write([0xe2, 0x82, 0xac, 10]);
          response.write("\\u00ff");
          aerokit.setStatus(v4.ACCEPTED);
          v4.setHeader("Content-Length", "1");
          v4.setHeader("Connection", "close");
          v4.setHeader("X-Kind", "all");
        `,
      }),
    );
    const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/p/all.js`);
    expect(answer.status).to.equal(202);
    expect(answer.headers.get('x-kind')).to.equal('all');
    expect(Buffer.from(await answer.arrayBuffer())).to.deep.equal(Buffer.concat([Buffer.from('one object\n'), Buffer.from([0xe2, 0x82, 0xac, 10, 0xff])]));
  });

  it('response: in a handler module it is a clear tenant error; the handler carries on', async () => {
    const s = await serveRoot(
      makeRoot({
        'p/e.websocket': '{"handler": "p/h", "endpoint": "e"}',
        'p/h.js': `
          const response = require("http/v4/response");
          exports.onMessage = (m) => { try { response.println(m); } catch (e) { return e.message; } };
        `,
      }),
    );
    const peer = await connect(s.url('e'));
    peer.ws.send('x');
    expect(await peer.receive(1)).to.deep.equal([
      "ISLET_ERR_NO_RESPONSE: http/v4/response is a script's answer to the HTTP request that ran it; a handler module has no response (send to the socket instead)",
    ]);
  });

  it('response: written after close() is an error; a status of 400 or more makes islet run exit 1', async () => {
    const root = makeRoot({
      'p/closed.js': 'const r = require("http/v4/response"); r.close(); console.log(r.isValid()); r.println("late");',
      'p/missing.js': 'const r = require("http/v4/response"); r.setStatus(r.NOT_FOUND); r.println("no such thing");',
    });
    const closed = await runCli(['run', 'p/closed.js', '--root', root], { cwd: root });
    expect(closed.code).to.equal(1);
    expect(closed.stdout).to.equal('[p] false\n');
    expect(closed.stderr).to.match(/^ISLET_ERR_UNCAUGHT: Error: ISLET_ERR_RESPONSE_CLOSED: the response is closed; nothing more can be written to it\n {4}at /);
    const missing = await runCli(['run', 'p/missing.js', '--root', root], { cwd: root });
    expect(missing).to.deep.include({ code: 1, stdout: 'no such thing\n', stderr: '' });
  });

  it('scripts over HTTP: a throw is 500 with the mapped trace, a script that never ends is 504, a missing one 404; the victim echoes throughout', async function () {
    this.timeout(30_000);
    const s = await serveRoot(
      makeRoot({
        'p/throws.js': 'function fail() {\n  throw new Error("broken script");\n}\nfail();',
        'p/forever.js': 'setInterval(() => console.log("tick"), 50);',
        'p/bad-bundle.js': 'const x = ;',
        ...VICTIM,
      }),
      { limits: { scriptTimeoutMs: 500 } },
    );
    const victim = await connect(s.url('victim'));
    const get = async (script: string): Promise<[number, string]> => {
      const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/${script}`);
      return [answer.status, await answer.text()];
    };
    const [thrown, forever, missing, outside, bundle] = await Promise.all([get('p/throws.js'), get('p/forever.js'), get('p/nothing.js'), get('p/..%2F..%2Fetc/passwd.js'), get('p/bad-bundle.js')]);
    expect(thrown[0]).to.equal(500);
    expect(thrown[1]).to.match(/^ISLET_ERR_UNCAUGHT: Error: broken script\n {4}at fail \(p\/throws\.js:2:9\)\n {4}at Object\.<anonymous> \(p\/throws\.js:4:1\)/);
    expect(forever).to.deep.equal([504, 'ISLET_ERR_TIMEOUT: script p/forever.js did not finish within 500 ms (limit scriptTimeoutMs)\n']);
    expect(missing).to.deep.equal([404, 'ISLET_ERR_SCRIPT_NOT_FOUND: no script p/nothing.js\n']);
    expect(outside[0]).to.equal(404);
    expect(bundle[0]).to.equal(500);
    expect(bundle[1]).to.match(/^ISLET_ERR_BUNDLE: p\/bad-bundle\.js:1:1\d: /);
    victim.ws.send('still');
    expect(await victim.receive(1)).to.deep.equal(['victim still']);
    // The cut run's interval went with it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const ticks = s.lines().filter((l) => l === 'tick').length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(s.lines().filter((l) => l === 'tick').length).to.equal(ticks);
    expect(s.errors.map((e) => e.code)).to.have.members(['ISLET_ERR_UNCAUGHT', 'ISLET_ERR_TIMEOUT']);
  });

  it('scripts over HTTP: runs queued behind a call stopped at its budget are not answered before they ran', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot({ 'p/work.js': 'const end = Date.now() + 150; while (Date.now() < end) {}\nrequire("http/v4/response").print("result=42");' }), {
      limits: { callTimeoutMs: 400 },
    });
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/p/work.js`);
        return [answer.status, await answer.text()] as const;
      }),
    );
    for (const [status, text] of answers) {
      if (status === 200) expect(text).to.equal('result=42');
      else expect([status, text.slice(0, 17)]).to.deep.equal([504, 'ISLET_ERR_TIMEOUT']);
    }
    expect(answers.filter(([status]) => status === 200).length).to.be.at.least(4);
  });

  it('scripts over HTTP: one run\'s timer that throws fails that run only; a path through a linked folder is 404', async () => {
    const root = makeRoot({
      'p/bad.js': 'setTimeout(() => { throw new Error("bad run, secret detail"); }, 100);',
      'p/good.js': 'setTimeout(() => require("http/v4/response").print("good run"), 400);',
    });
    symlinkSync('.', path.join(root, 'p/loop'));
    const s = await serveRoot(root);
    const get = async (script: string): Promise<[number, string]> => {
      const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/${script}`);
      return [answer.status, await answer.text()];
    };
    const [bad, good] = await Promise.all([get('p/bad.js'), get('p/good.js')]);
    expect(bad[0]).to.equal(500);
    expect(bad[1]).to.contain('bad run, secret detail');
    expect(good).to.deep.equal([200, 'good run']);
    expect(await get('p/loop/loop/good.js')).to.deep.equal([404, 'ISLET_ERR_SCRIPT_NOT_FOUND: no script p/loop/loop/good.js\n']);
  });

  it('scripts over HTTP: a peer that stops reading a large answer is dropped after upgradeTimeoutMs', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot({ 'p/big.js': 'require("http/v4/response").print("x".repeat(8 * 1024 * 1024));' }), { upgradeTimeoutMs: 500 });
    const socket = net.connect(s.port, '127.0.0.1');
    socket.write('GET /services/js/p/big.js HTTP/1.1\r\nHost: x\r\n\r\n');
    socket.pause(); // reads nothing for 3 s, then what is left
    await new Promise((resolve) => setTimeout(resolve, 3000));
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    const ended = await new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      socket.on('error', () => {});
      socket.resume();
      setTimeout(() => resolve(false), 10_000);
    });
    socket.destroy();
    expect(ended).to.equal(true);
    expect(received).to.be.below(8 * 1024 * 1024);
  });

  it('scripts over HTTP: --no-scripts (scripts: false) answers 404; with access control a token is needed', async () => {
    const files = { 'p/hello.js': 'require("http/v4/response").print("hello");' };
    const off = await serveRoot(makeRoot(files), { scripts: false });
    expect((await fetch(`http://127.0.0.1:${off.port}/services/js/p/hello.js`)).status).to.equal(404);
    const asked: unknown[] = [];
    const guarded = await serveRoot(makeRoot(files), {
      authorize: (req, target) => {
        asked.push(target);
        return req.headers.authorization === 'Bearer good' ? true : { status: 401, reason: 'a token is needed' };
      },
    });
    const url = `http://127.0.0.1:${guarded.port}/services/js/p/hello.js`;
    const refused = await fetch(url);
    expect([refused.status, await refused.text()]).to.deep.equal([401, 'a token is needed\n']);
    const allowed = await fetch(url, { headers: { authorization: 'Bearer good' } });
    expect([allowed.status, await allowed.text()]).to.deep.equal([200, 'hello']);
    expect(asked).to.deep.equal([
      { script: 'p/hello.js', project: 'p', public: false },
      { script: 'p/hello.js', project: 'p', public: false },
    ]);
  });

  it('scripts over HTTP: past maxScriptRuns a tenant\'s next request is 503; another tenant still runs its script', async function () {
    this.timeout(30_000);
    const s = await serveRoot(
      makeRoot({
        'a/wait.js': 'setTimeout(() => require("http/v4/response").print("done"), 1000);',
        'b/now.js': 'require("http/v4/response").print("b ran");',
      }),
      { limits: { maxScriptRuns: 2 } },
    );
    const base = `http://127.0.0.1:${s.port}/services/js/`;
    const slow = [fetch(base + 'a/wait.js'), fetch(base + 'a/wait.js')];
    await new Promise((resolve) => setTimeout(resolve, 300));
    const third = await fetch(base + 'a/wait.js');
    expect([third.status, await third.text()]).to.deep.equal([503, 'ISLET_ERR_LIMIT_SCRIPT_RUNS: tenant "a" already has 2 scripts running over HTTP (limit maxScriptRuns)\n']);
    const other = await fetch(base + 'b/now.js');
    expect([other.status, await other.text()]).to.deep.equal([200, 'b ran']);
    for (const answer of await Promise.all(slow)) expect([answer.status, await answer.text()]).to.deep.equal([200, 'done']);
  });

  it('a run ends when what it made is done, not when its tenant is idle: an endpoint handler\'s interval does not hold a script', async () => {
    const t = await startEngine(
      makeRoot({
        'p/h.js': 'setInterval(() => {}, 20); exports.onMessage = () => {};',
        'p/start.js': 'require("net/v4/websockets").createWebsocket("ws://127.0.0.1:1/", "p/h");',
        'p/later.js': `
          const response = require("http/v4/response");
          const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
          (async () => { await sleep(30); response.print("one "); await sleep(30); response.print("two"); })();
        `,
      }),
    );
    // The handler module is loaded by p/start.js's client, but its interval is the module's: p/start.js ends once its client has closed.
    const start = settle(t.engine.run('p/start.js'));
    const later = await t.engine.run('p/later.js');
    expect(later.body.toString()).to.equal('one two');
    expect(await start).to.equal('no error');
  });

  it('a handler module loaded first by a script\'s client keeps its own interval: it holds no run, and cutting the run leaves it running', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      'p/tick.websocket': '{"handler": "p/h", "endpoint": "tick"}',
      'p/h.js': 'let count = 0; setInterval(() => count++, 20); exports.onMessage = () => "count=" + count;',
      ...VICTIM,
    });
    const s = await serveRoot(root, { limits: { scriptTimeoutMs: 1000 } });
    writeFileSync(path.join(root, 'p/start.js'), `const c = require("net/v4/websockets").createWebsocket("${s.url('victim')}", "p/h"); c.close(); require("http/v4/response").print("started");`);
    const answer = await fetch(`http://127.0.0.1:${s.port}/services/js/p/start.js`);
    expect([answer.status, await answer.text()]).to.deep.equal([200, 'started']);
    const peer = await connect(s.url('tick'));
    peer.ws.send('?');
    await new Promise((resolve) => setTimeout(resolve, 300));
    peer.ws.send('?');
    const [first, second] = (await peer.receive(2)).map((m) => Number(m.slice(6)));
    expect(second! - first!).to.be.at.least(5);
  });

  it('a descriptor with a byte-order mark and fields Dirigible\'s tools add is served; a bad one still names file and field', async () => {
    const s = await serveRoot(
      makeRoot({
        'p/bom.websocket': '\uFEFF{"handler": "p/h", "endpoint": "bom", "createdBy": "dirigible", "createdAt": "2026-01-01T00:00:00Z", "location": "/p/bom.websocket"}',
        'p/bad.websocket': '\uFEFF{"handler": 7, "endpoint": "bad"}',
        'p/h.js': 'exports.onMessage = (m) => m;',
      }),
    );
    expect(s.engine.endpoints().map((e) => e.name)).to.deep.equal(['bom']);
    expect(s.problems.map((p) => [p.file, p.field])).to.deep.equal([['p/bad.websocket', 'handler']]);
    const peer = await connect(s.url('bom'));
    peer.ws.send('x');
    expect(await peer.receive(1)).to.deep.equal(['x']);
  });
});
