import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { echoPeer, makeRoot, type Peer, startEngine } from '../helpers.js';

/** A handler that logs what every accessor says, as JSON, in each event. */
const SPY_HANDLER = `
const ws = require("net/v4/websockets");
function snap(tag, arg) {
  console.log(JSON.stringify({
    tag, arg,
    method: ws.getMethod(), message: ws.getMessage(), error: ws.getError(),
    handler: ws.getHandler(), session: ws.getSessionId(),
    is: [ws.isOnOpen(), ws.isOnMessage(), ws.isOnError(), ws.isOnClose()],
    clients: ws.getClients(),
  }));
}
exports.onOpen = (id) => { snap("open", id); ws.getClient(id).send("ping"); };
exports.onMessage = (message, id) => { snap("message", message); ws.getClient(id).close(); snap("closing", id); };
exports.onError = (error) => snap("error", error);
exports.onClose = (id) => snap("close", id);
`;

function json(lines: string[]): Record<string, unknown>[] {
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('net/v4/websockets: client API', () => {
  let peer: Peer;
  beforeEach(async () => {
    peer = await echoPeer();
  });
  afterEach(() => peer.close());

  it('createWebsocket: the handler sees every event with the context accessors set, and the registry follows the client', async () => {
    const root = makeRoot({
      'p/spy.js': SPY_HANDLER,
      'p/main.js': `
        const ws = require("net/v4/websockets");
        console.log(JSON.stringify({ tag: "outside", values: [ws.getMethod(), ws.getMessage(), ws.getError(), ws.getHandler(), ws.getSessionId(), ws.isOnOpen(), ws.isOnMessage(), ws.isOnError(), ws.isOnClose()] }));
        const client = ws.createWebsocket("${peer.url}", "p/spy");
        console.log(JSON.stringify({ tag: "created", id: client.id, clients: ws.getClients(),
          byId: ws.getClient(client.id) === client, byHandler: ws.getClientByHandler("p/spy") === client,
          unknownId: ws.getClient("no-such-id"), unknownHandler: ws.getClientByHandler("p/none") }));
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    const [outside, created, open, message, closing, close, ...rest] = json(t.lines());
    expect(rest).to.deep.equal([]);
    expect(outside!.values).to.deep.equal([null, null, null, null, null, false, false, false, false]);
    const id = created!.id as string;
    const meta = { id, uri: peer.url, handler: 'p/spy', engine: 'javascript' };
    expect(created).to.deep.include({ clients: [{ ...meta, state: 'connecting' }], byId: true, byHandler: true, unknownId: null, unknownHandler: null });
    expect(open).to.deep.equal({
      tag: 'open', arg: id, method: 'onopen', message: null, error: null, handler: 'p/spy', session: id,
      is: [true, false, false, false], clients: [{ ...meta, state: 'open' }],
    });
    expect(message).to.deep.equal({
      tag: 'message', arg: 'ping', method: 'onmessage', message: 'ping', error: null, handler: 'p/spy', session: id,
      is: [false, true, false, false], clients: [{ ...meta, state: 'open' }],
    });
    expect(closing!.clients).to.deep.equal([{ ...meta, state: 'closing' }]);
    // Dirigible removes the client from the registry before onClose runs.
    expect(close).to.deep.equal({
      tag: 'close', arg: id, method: 'onclose', message: null, error: null, handler: 'p/spy', session: id,
      is: [false, false, false, true], clients: [],
    });
    expect(peer.received).to.deep.equal(['ping']);
    expect(t.errors).to.deep.equal([]);
  });

  it('createWebsocket: send and close before the socket opens are queued and applied in order', async () => {
    const root = makeRoot({
      'p/h.js': 'exports.onClose = () => console.log("closed");',
      'p/main.js': `
        const ws = require("net/v4/websockets");
        const c = ws.createWebsocket("${peer.url}", "p/h");
        for (let i = 1; i <= 50; i++) c.send("m" + i);
        c.close();
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    expect(peer.received).to.deep.equal(Array.from({ length: 50 }, (_, i) => `m${i + 1}`));
    expect(t.lines()).to.deep.equal(['closed']);
  });

  it('net/websockets and sdk/net are the same API as net/v4/websockets', async () => {
    const root = makeRoot({
      'p/h.ts': 'import { websockets } from "sdk/net";\nexport function onMessage(m: string): void { console.log("sdk", m, websockets.getMessage()); websockets.getClientByHandler("p/h")!.close(); }\n',
      'p/main.mjs': `
        import * as v4 from "net/v4/websockets";
        import * as alias from "net/websockets";
        import { websockets } from "sdk/net";
        console.log(String(v4.createWebsocket === alias.createWebsocket && alias.createWebsocket === websockets.createWebsocket));
        const c = alias.createWebsocket("${peer.url}", "p/h", "v8");
        c.send("via-alias");
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.mjs');
    expect(t.lines()).to.deep.equal(['true', 'sdk via-alias via-alias']);
  });

  it('a TypeScript handler module keeps its state between events', async () => {
    const root = makeRoot({
      'p/counter.ts': `
        import { getClientByHandler } from "net/v4/websockets";
        let seen: string[] = [];
        export function onMessage(message: string): void {
          seen.push(message);
          if (seen.length === 3) { console.log(seen.join(",")); getClientByHandler("p/counter")?.close(); }
        }
      `,
      'p/main.ts': `
        import { createWebsocket } from "net/v4/websockets";
        const client = createWebsocket("${peer.url}", "p/counter", "javascript");
        ["a", "b", "c"].forEach((m) => client.send(m));
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.ts');
    expect(t.lines()).to.deep.equal(['a,b,c']);
  });

  it('onMessage: an exception reaches onError with its message; one thrown by onError is reported and the client carries on', async () => {
    const root = makeRoot({
      'p/h.js': `
        const ws = require("net/v4/websockets");
        let errors = 0;
        exports.onMessage = (m) => { if (m !== "ok") throw new Error("cannot handle " + m); console.log("handled", m); ws.getClientByHandler("p/h").close(); };
        exports.onError = (e) => {
          console.log("onError", e, ws.getMethod(), ws.getError());
          if (++errors === 2) throw new Error("onError failed too");
        };
        exports.onClose = () => console.log("closed");
      `,
      'p/async.js': `
        exports.onMessage = async (m) => { await null; throw new Error("async " + m); };
        exports.onError = (e) => { console.log("async onError", e); require("net/v4/websockets").getClientByHandler("p/async").close(); };
      `,
      'p/main.js': `
        const ws = require("net/v4/websockets");
        const c = ws.createWebsocket("${peer.url}", "p/h");
        c.send("x"); c.send("y"); c.send("ok");
        ws.createWebsocket("${peer.url}", "p/async").send("z");
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    const lines = t.lines();
    expect(lines.filter((l) => !l.startsWith('async'))).to.deep.equal([
      'onError cannot handle x onerror cannot handle x',
      'onError cannot handle y onerror cannot handle y',
      'handled ok',
      'closed',
    ]);
    expect(lines).to.include('async onError async z');
    expect(t.errors).to.have.length(1);
    expect(t.errors[0]!.tenant).to.equal('p');
    expect(t.errors[0]!.error).to.match(/^ISLET_ERR_UNCAUGHT: Error: onError failed too\n\s+at exports\.onError \(p\/h\.js:7:\d+\)/);
  });

  it('createWebsocket: a refused connection calls onError with the reason, then onClose, and leaves the registry', async () => {
    const port = await freePort();
    const root = makeRoot({
      'p/h.js': `
        const ws = require("net/v4/websockets");
        exports.onOpen = () => console.log("opened?!");
        exports.onError = (e) => console.log("error", e, JSON.stringify(ws.getClients().map((c) => c.state)));
        exports.onClose = () => console.log("close", JSON.stringify(ws.getClients()));
      `,
      'p/main.js': `require("net/v4/websockets").createWebsocket("ws://127.0.0.1:${port}/", "p/h").send("lost");`,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    expect(t.lines()).to.deep.equal([`error ISLET_ERR_CONNECTION: connect ECONNREFUSED 127.0.0.1:${port} ["connecting"]`, 'close []']);
  });

  it('createWebsocket: a rejected handshake and an unknown host are reported to onError, then onClose', async () => {
    const server = http.createServer();
    server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as AddressInfo).port;
    try {
      const root = makeRoot({
        'p/h.js': 'exports.onError = (e, id) => console.log(id, "error", e);\nexports.onClose = (id) => console.log(id, "close");',
        'p/main.js': `
          const ws = require("net/v4/websockets");
          const a = ws.createWebsocket("ws://127.0.0.1:${port}/", "p/h");
          const b = ws.createWebsocket("ws://no-such-host.invalid/", "p/h");
          console.log("ids", a.id, b.id);
        `,
      });
      const t = await startEngine(root);
      await t.engine.run('p/main.js');
      const [ids, ...events] = t.lines();
      const [, a, b] = ids!.split(' ');
      expect(events.filter((l) => l.startsWith(a + ' '))).to.deep.equal([`${a} error ISLET_ERR_CONNECTION: Unexpected server response: 403`, `${a} close`]);
      expect(events.filter((l) => l.startsWith(b + ' '))).to.deep.equal([`${b} error ISLET_ERR_CONNECTION: getaddrinfo ENOTFOUND no-such-host.invalid`, `${b} close`]);
    } finally {
      server.close();
    }
  });

  it('createWebsocket: bad engine, URI and handler ids throw Errors that name them', async () => {
    const root = makeRoot({
      'p/h.js': '',
      'q/h.js': '',
      'p/main.js': `
        const ws = require("net/v4/websockets");
        const attempts = [
          ["${peer.url}", "p/h", "python"],
          ["${peer.url}", "p/h", 42],
          ["http://127.0.0.1/", "p/h"],
          ["not a uri", "p/h"],
          [undefined, "p/h"],
          ["${peer.url}", "p/missing"],
          ["${peer.url}", "q/h"],
          ["${peer.url}", "p/../q/h"],
          ["${peer.url}", "/p/h"],
          ["${peer.url}", ""],
        ];
        for (const args of attempts) {
          try { ws.createWebsocket(...args); console.log("no error for", JSON.stringify(args)); }
          catch (e) { console.log(e.constructor.name + ": " + e.message); }
        }
        const accepted = ["rhino", "nashorn", "graalvm", "graalium", "javascript", "v8", "isolated-vm", undefined, null]
          .map((engine) => ws.createWebsocket("${peer.url}", "p/h", engine));
        console.log(JSON.stringify(ws.getClients().map((c) => c.engine)));
        accepted.forEach((c) => c.close());
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    expect(t.lines()).to.deep.equal([
      'Error: ISLET_ERR_BAD_ENGINE: engine "python" is not supported; use javascript, v8, isolated-vm (Dirigible\'s rhino, nashorn, graalvm, graalium are accepted as aliases) or omit it',
      'Error: ISLET_ERR_BAD_ENGINE: engine of type number is not supported; use javascript, v8, isolated-vm (Dirigible\'s rhino, nashorn, graalvm, graalium are accepted as aliases) or omit it',
      'Error: ISLET_ERR_BAD_URI: uri "http://127.0.0.1/" must use ws: or wss:, not http:',
      'Error: ISLET_ERR_BAD_URI: uri "not a uri" is not a valid URL',
      'Error: ISLET_ERR_BAD_URI: uri must be a string, got undefined',
      'Error: ISLET_ERR_HANDLER_NOT_FOUND: handler "p/missing" resolves to no file; tried p/missing.js, p/missing.ts, p/missing.mjs under the projects root',
      'Error: ISLET_ERR_BAD_HANDLER_ID: handler "q/h" belongs to project "q", not to "p": a project may only use its own handlers',
      'Error: ISLET_ERR_BAD_HANDLER_ID: handler "p/../q/h" must be a relative module id like "my-project/ws-handler" (no leading "/", "\\", "." or ".." segments)',
      'Error: ISLET_ERR_BAD_HANDLER_ID: handler "/p/h" must be a relative module id like "my-project/ws-handler" (no leading "/", "\\", "." or ".." segments)',
      'Error: ISLET_ERR_BAD_HANDLER_ID: handler must be a non-empty string, got a string',
      JSON.stringify(['rhino', 'nashorn', 'graalvm', 'graalium', 'javascript', 'v8', 'isolated-vm', 'javascript', 'javascript']),
    ]);
  });

  it('WebsocketClient.send: refuses non-text, oversize messages and closed clients with clear errors', async () => {
    const root = makeRoot({
      'p/h.js': `
        const ws = require("net/v4/websockets");
        const attempt = (what, fn) => { try { fn(); console.log(what, "sent"); } catch (e) { console.log(what, e.constructor.name + ": " + e.message); } };
        exports.onOpen = (id) => {
          const c = ws.getClient(id);
          attempt("object", () => c.send({ text: "hi" }));
          attempt("number", () => c.send(42));
          attempt("getter", () => c.send({ get toString() { throw new Error("got me"); } }));
          attempt("oversize", () => c.send("x".repeat(101)));
          attempt("multibyte", () => c.send("é".repeat(51)));
          attempt("at limit", () => c.send("y".repeat(100)));
          c.close();
          attempt("closing", () => c.send("late"));
          c.close();
        };
        exports.onClose = (id) => attempt("closed", () => ws.getClient(id).send("x"));
      `,
      'p/main.js': `require("net/v4/websockets").createWebsocket("${peer.url}", "p/h");`,
    });
    const t = await startEngine(root, { limits: { maxMessageBytes: 100 } });
    await t.engine.run('p/main.js');
    const lines = t.lines();
    expect(lines.slice(0, 6)).to.deep.equal([
      'object TypeError: ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got object',
      'number TypeError: ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got number',
      'getter TypeError: ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got object',
      'oversize RangeError: ISLET_ERR_MESSAGE_TOO_LARGE: WebsocketClient.send(message): message is over the limit of 100 bytes',
      'multibyte RangeError: ISLET_ERR_MESSAGE_TOO_LARGE: WebsocketClient.send(message): message is over the limit of 100 bytes',
      'at limit sent',
    ]);
    expect(lines[6]).to.match(/^closing Error: ISLET_ERR_CLIENT_CLOSED: client \d+ \(ws:\/\/127\.0\.0\.1:\d+\/\) is closed$/);
    // Once closed the client has left the registry: getClient returns null.
    expect(lines.slice(7)).to.deep.equal(["closed TypeError: Cannot read properties of null (reading 'send')"]);
    expect(peer.received).to.deep.equal(['y'.repeat(100)]);
  });

  it('a binary frame and an oversize frame from the server are reported to onError', async () => {
    const server = await echoPeer((ws) => {
      ws.send(Buffer.from([1, 2, 3]), { binary: true });
      ws.send('after binary');
      ws.send('z'.repeat(200));
    });
    try {
      const root = makeRoot({
        'p/h.js': `
          exports.onMessage = (m) => console.log("message", m);
          exports.onError = (e) => console.log("error", e);
          exports.onClose = () => console.log("close");
        `,
        'p/main.js': `require("net/v4/websockets").createWebsocket("${server.url}", "p/h");`,
      });
      const t = await startEngine(root, { limits: { maxMessageBytes: 100 } });
      await t.engine.run('p/main.js');
      expect(t.lines()).to.deep.equal([
        'error ISLET_ERR_NOT_TEXT: binary frame of 3 bytes ignored: islet clients take text only',
        'message after binary',
        'error ISLET_ERR_MESSAGE_TOO_LARGE: the peer sent a message over 100 bytes (limit maxMessageBytes); the connection was closed with 1009',
        'close',
      ]);
    } finally {
      await server.close();
    }
  });

  it('a handler with a syntax error is reported with its file and line; the client leaves the registry', async () => {
    const root = makeRoot({
      'p/bad.js': 'exports.onOpen = function () {\n  console.log("never";\n};\n',
      'p/main.js': `
        const ws = require("net/v4/websockets");
        ws.createWebsocket("${peer.url}", "p/bad");
        setTimeout(() => console.log("clients", ws.getClients().length), 300);
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/main.js');
    expect(t.lines()).to.deep.equal(['clients 0']);
    expect(t.errors).to.have.length(1);
    expect(t.errors[0]!.error).to.match(/^ISLET_ERR_BUNDLE: p\/bad\.js:2:\d+: Expected "\)" but found ";"/);
  });
});
