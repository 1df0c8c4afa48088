// Hostile tenants. Each attack runs as a script of its own project while a
// victim tenant's echo endpoint is kept busy; every attack must leave the host
// alive, the victim's every message answered in order, and the attacker with
// the exact error it earned.
import { expect } from 'chai';
import { connect, keepOpen, makeRoot, type Served, serveRoot, settle, writeFiles } from '../helpers.js';

interface Attack {
  name: string;
  /** The attacker's script (CommonJS, in its own project). */
  code: string;
  /** What engine.run(script) settled with: 'no error', or the error message. */
  outcome: string | RegExp;
  /** The attacker's log lines, when they tell something. */
  lines?: (string | RegExp)[];
}

const ATTACKS: Attack[] = [
  // Escapes: nothing of Node is reachable from any function constructor or hook.
  {
    name: 'escape: this.constructor.constructor("return process")()',
    code: 'console.log(typeof this.constructor.constructor("return process")());',
    outcome: /^ISLET_ERR_UNCAUGHT: ReferenceError: process is not defined\n/,
  },
  {
    name: 'escape: the async function constructor',
    code: '(async function () {}).constructor("return typeof process")().then((t) => console.log(t));',
    outcome: 'no error',
    lines: ['undefined'],
  },
  {
    name: 'escape: the generator function constructor',
    code: 'console.log((function* () {}).constructor("yield typeof require")().next().value);',
    outcome: 'no error',
    lines: ['undefined'],
  },
  {
    name: 'escape: Error.prepareStackTrace reaching for frames\' receivers and functions',
    code: `
      Error.prepareStackTrace = (e, frames) => frames.map((f) => typeof f.getThis() + "/" + typeof f.getFunction());
      function probe() { return new Error("x").stack; }
      const seen = probe();
      console.log(JSON.stringify(seen), typeof globalThis.process);
    `,
    outcome: 'no error',
    lines: [/^\[.*\] undefined$/],
  },
  {
    name: 'escape: Error.cause and a stack getter that never returns, thrown at the host',
    code: `
      const e = new Error("outer", { cause: new Proxy({}, { get() { for (;;); } }) });
      Object.defineProperty(e, "stack", { get() { for (;;); } });
      throw e;
    `,
    outcome: /^ISLET_ERR_TIMEOUT: tenant "a\d+" ran past its budget of 250 ms/,
  },
  {
    name: 'escape: a Proxy thrown whose traps throw',
    code: 'throw new Proxy({}, { get() { throw new Error("trap"); }, getPrototypeOf() { throw new Error("trap"); } });',
    outcome: 'ISLET_ERR_UNCAUGHT: Uncaught exception (it could not be turned into text)',
  },
  {
    name: 'escape: Symbol.species on a promise the host would chain',
    code: `
      class Evil extends Promise { static get [Symbol.species]() { return function () { throw new Error("species"); }; } }
      Promise.prototype.then = function () { throw new Error("patched then"); };
      setTimeout(() => console.log("still running"), 1);
      Evil.resolve(1);
    `,
    outcome: 'no error',
    lines: ['still running'],
  },
  {
    name: 'escape: Symbol.for("nodejs.util.inspect.custom") on a logged object',
    code: 'console.log({ [Symbol.for("nodejs.util.inspect.custom")]: () => process.exit(1), a: 1 });',
    outcome: 'no error',
    lines: ['{"a":1}'],
  },
  {
    name: 'escape: require and import of Node built-ins at run time',
    code: `
      const name = ["child", "process"].join("_");
      try { require(name); } catch (e) { console.log(e.message); }
      new Function("return import('fs')")().then(() => console.log("imported!"), (e) => console.log("import:", e.constructor.name));
    `,
    outcome: 'no error',
    lines: [/^ISLET_ERR_MODULE_NOT_FOUND: module "child_process" is not available/, 'import: Error'],
  },
  // CPU: every form of never yielding is stopped at the call's budget.
  { name: 'cpu: for (;;) at top level', code: 'for (;;);', outcome: /^ISLET_ERR_TIMEOUT: tenant "a\d+" ran past its budget of 250 ms \(limit callTimeoutMs\)/ },
  // Each promise resolves to the next, so the chain also grows: the budget or the heap limit stops it, whichever comes first.
  { name: 'cpu: a microtask loop', code: 'const spin = () => Promise.resolve().then(spin);\nspin();', outcome: /^ISLET_ERR_(TIMEOUT|MEMORY_LIMIT): / },
  { name: 'cpu: a busy loop after await', code: '(async () => { await null; for (;;); })();', outcome: /^ISLET_ERR_TIMEOUT: / },
  { name: 'cpu: a busy loop in a timer', code: 'setTimeout(() => { for (;;); }, 1);', outcome: /^ISLET_ERR_TIMEOUT: / },
  {
    name: 'cpu: Atomics.wait forever',
    code: 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);',
    outcome: /^ISLET_ERR_(TIMEOUT|UNCAUGHT): /,
  },
  {
    name: 'cpu: catch-and-continue loops that swallow the timeout',
    code: 'for (;;) { try { for (;;); } catch (e) {} finally { continue; } }',
    outcome: /^ISLET_ERR_TIMEOUT: /,
  },
  // Memory.
  {
    // Usually the heap limit comes first; on a loaded machine the 250 ms budget can.
    name: 'memory: gradual growth',
    code: 'const hoard = [];\nfor (;;) hoard.push(new Array(10000).fill("x"));',
    outcome: /^ISLET_ERR_(MEMORY_LIMIT: tenant "a\d+" ran out of its 32 MiB heap \(limit memoryMiB\)|TIMEOUT: tenant "a\d+" ran past its budget of 250 ms)/,
  },
  {
    // On Node 20 with isolated-vm 5 this aborted the whole worker (a V8 fatal
    // error). isolated-vm 7 stops it at the heap limit, but only after about
    // 13 s in a builtin that no budget interrupts: the watchdog kills the worker first.
    name: 'memory: one huge allocation holds the worker in a builtin; the watchdog kills it, not the host',
    code: 'new Array(1e8).fill(0);',
    outcome: /^ISLET_ERR_WORKER_DIED: sandbox worker 0 died \(it stopped answering for \d+ ms \(the watchdog's bound is 3250 ms\) and was killed\) while running a script/,
  },
  {
    name: 'memory: string doubling',
    code: 'let s = "x";\nfor (;;) s += s;',
    outcome: /^ISLET_ERR_(UNCAUGHT: RangeError: Invalid string length|MEMORY_LIMIT: )/,
  },
  {
    name: 'memory: a JSON.parse bomb',
    code: 'const n = 3e6;\nJSON.parse("[".repeat(n) + "]".repeat(n));',
    outcome: /^ISLET_ERR_(UNCAUGHT: RangeError: Maximum call stack size exceeded|MEMORY_LIMIT: )/,
  },
  {
    name: 'memory: eval of a huge source',
    code: 'eval("1+".repeat(5e6) + "1");',
    outcome: /^ISLET_ERR_UNCAUGHT: EvalError: Code generation from strings disallowed for this context\n/,
  },
  // Floods.
  {
    name: 'flood: timers',
    code: 'for (;;) setTimeout(() => {}, 1e9);',
    // The error is thrown in the tenant's own stack: no frame of the host's.
    outcome: /^ISLET_ERR_UNCAUGHT: Error: ISLET_ERR_LIMIT_TIMERS: tenant "a\d+" already has 100 timers \(limit maxTimers\)\n\s+at Object\.<anonymous> \(a\d+\/attack\.js:1:\d+\)$/,
  },
  { name: 'flood: promises', code: 'for (let i = 0; ; i++) Promise.resolve(i);', outcome: /^ISLET_ERR_(TIMEOUT|MEMORY_LIMIT): / },
  {
    name: 'flood: clients',
    code: 'for (let i = 0; ; i++) require("net/v4/websockets").createWebsocket("ws://127.0.0.1:1/", "aN/h");',
    outcome: /^ISLET_ERR_UNCAUGHT: Error: ISLET_ERR_LIMIT_CLIENTS: tenant "a\d+" already has 20 clients \(limit maxClients\)\n\s+at Object\.<anonymous> \(a\d+\/attack\.js:1:\d+\)$/,
  },
  {
    name: 'flood: console output',
    code: 'for (let i = 0; i < 2000; i++) console.log("spam".repeat(2000));',
    outcome: 'no error',
  },
  // The boundary: only text crosses, and it is checked first.
  {
    name: 'boundary: a huge string handed to createWebsocket',
    code: 'require("net/v4/websockets").createWebsocket("ws://" + "a".repeat(1e7), "aN/h");',
    outcome: /^ISLET_ERR_UNCAUGHT: Error: ISLET_ERR_BAD_URI: uri is longer than 4096 characters/,
  },
  {
    name: 'boundary: a huge handler id',
    code: 'require("net/v4/websockets").createWebsocket("ws://127.0.0.1:1/", "aN/" + "h".repeat(1e6));',
    outcome: /^ISLET_ERR_UNCAUGHT: Error: ISLET_ERR_BAD_HANDLER_ID: handler id is longer than 1024 characters/,
  },
  {
    name: 'boundary: SharedArrayBuffer, shared WebAssembly memory and a shrunk resizable buffer\'s view as messages',
    code: `
      const c = require("net/v4/websockets").createWebsocket("ws://127.0.0.1:1/", "aN/h");
      const rab = new ArrayBuffer(16, { maxByteLength: 32 });
      const view = new Uint8Array(rab, 8);
      rab.resize(0);
      const shared = typeof WebAssembly === "object" ? new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer : new SharedArrayBuffer(8);
      for (const value of [new SharedArrayBuffer(8), shared, view]) {
        try { c.send(value); } catch (e) { console.log(e.message); }
      }
      c.close();
    `,
    outcome: 'no error',
    lines: [
      'ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got object',
      'ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got object',
      'ISLET_ERR_NOT_TEXT: WebsocketClient.send(message) takes a string, got object',
    ],
  },
  {
    name: 'boundary: __proto__ and constructor keys as ids and handler ids',
    code: `
      const ws = require("net/v4/websockets");
      console.log(ws.getClient("__proto__"), ws.getSession("constructor"), ws.getClientByHandler("__proto__"), JSON.stringify(ws.getSessions()));
      try { ws.createWebsocket("ws://127.0.0.1:1/", "__proto__/constructor"); } catch (e) { console.log(e.message); }
    `,
    outcome: 'no error',
    lines: ['null null null []', /^ISLET_ERR_BAD_HANDLER_ID: handler "__proto__\/constructor" belongs to project "__proto__", not to "a\d+"/],
  },
  {
    name: 'boundary: functions and getters where text is expected',
    code: `
      const ws = require("net/v4/websockets");
      const sneaky = { toString() { throw new Error("toString ran"); }, get length() { throw new Error("getter ran"); } };
      for (const args of [[() => "ws://x/", "aN/h"], [sneaky, "aN/h"], ["ws://127.0.0.1:1/", sneaky], ["ws://127.0.0.1:1/", "aN/h", sneaky]]) {
        try { ws.createWebsocket(...args); } catch (e) { console.log(e.message.split(";")[0]); }
      }
    `,
    outcome: 'no error',
    lines: [
      'ISLET_ERR_BAD_URI: uri must be a string, got function',
      'ISLET_ERR_BAD_URI: uri must be a string, got object',
      'ISLET_ERR_BAD_HANDLER_ID: handler must be a non-empty string, got an object',
      'ISLET_ERR_BAD_ENGINE: engine of type object is not supported',
    ],
  },
  // Other tenants.
  {
    name: 'tenants: guessing another project\'s session and client ids',
    code: `
      const ws = require("net/v4/websockets");
      let found = 0;
      for (let id = 0; id < 300000; id += 7) if (ws.getSession(String(id)) || ws.getClient(String(id))) found++;
      console.log("found", found);
    `,
    outcome: 'no error',
    lines: ['found 0'],
  },
];

describe('attack suite', () => {
  let s: Served;
  let root: string;
  before(async () => {
    root = makeRoot({
      'victim/echo.websocket': JSON.stringify({ handler: 'victim/echo', endpoint: 'echo' }),
      'victim/echo.js': 'exports.onMessage = (m) => m;',
      'alive/ok.js': 'console.log("alive");',
    });
    s = await serveRoot(root, { limits: { callTimeoutMs: 250, memoryMiB: 32, maxTimers: 100, maxClients: 20 }, quarantineMs: 1 });
    keepOpen(s.engine);
  });
  after(() => s.engine.close());

  ATTACKS.forEach((attack, index) => {
    it(`attack: ${attack.name}`, async function () {
      this.timeout(30_000);
      const tenant = `a${index}`;
      writeFiles(root, { [`${tenant}/attack.js`]: attack.code.replaceAll('aN', tenant), [`${tenant}/h.js`]: '' });
      const victim = await connect(s.url('echo'));
      let sent = 0;
      const pinger = setInterval(() => victim.ws.send(String(++sent)), 2);
      const before = s.logs.length;
      const outcome = await settle(s.engine.run(`${tenant}/attack.js`));
      clearInterval(pinger);
      const expected = attack.outcome;
      if (typeof expected === 'string') expect(outcome).to.equal(expected.replaceAll('aN', tenant));
      else expect(outcome).to.match(expected);
      const lines = s.logs.slice(before).filter((l) => l.tenant === tenant).map((l) => l.text);
      for (const [i, line] of (attack.lines ?? []).entries()) {
        if (typeof line === 'string') expect(lines[i]).to.equal(line);
        else expect(lines[i]).to.match(line);
      }
      // The victim exchanged every message, in order, while the attack ran.
      const replies = await victim.receive(sent, 20_000);
      expect(replies).to.deep.equal(Array.from({ length: sent }, (_, i) => String(i + 1)));
      victim.ws.close();
      // The host is alive: it runs a benign tenant's script.
      await s.engine.run('alive/ok.js');
    });
  });
});
