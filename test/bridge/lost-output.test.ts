// Hazard: output lost to the tenant's own fault elsewhere. A stray rejected
// promise (isolated-vm throws it out of the call), a microtask loop after
// the handler returned, an exception or a stopped call with no onError to
// hear it, an isolate lost to its memory limit: the event's replies, sends
// and console lines are kept, and the fault is reported. A victim tenant
// keeps echoing beside it.
import { expect } from 'chai';
import { connect, makeRoot, runCli, serveRoot, type Served, type TestClient, VICTIM } from '../helpers.js';

const ROOT = {
  ...VICTIM,
  'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
  'a/h.js': `const ws = require("net/v4/websockets");
exports.onMessage = (m, id) => {
  ws.getSession(id).send("sent before " + m);
  console.log("logged before " + m);
  if (m === "stray") Promise.reject(new Error("stray rejection"));
  if (m === "async") (async () => { throw new Error("async throw"); })();
  if (m === "loop") (function loop() { Promise.resolve().then(loop); })();
  if (m === "throw") throw new Error("thrown with no onError");
  if (m === "spin") for (;;);
  if (m === "mixed") {
    for (let i = 0; i < 3000; i++) ws.getSession(id).send(i >= 2000 && i % 7 === 0 ? String(i).padEnd(300 + (i % 3), ".") : ("s" + i).padEnd(200, "-"));
    console.log("lone \\ud800 surrogate");
  }
  // isolated-vm reads the reason's message when it throws the rejection out of the call, outside any budget.
  if (m === "getter") Promise.reject({ get message() { for (;;); } });
  if (m === "block") for (const end = Date.now() + 300; Date.now() < end; );
  if (m === "grow") for (const hoard = []; ; ) hoard.push(new Array(100000).fill(1));
  return "reply " + m;
};
`,
};

describe('hazard: lost output', () => {
  let s: Served;
  let victim: TestClient;
  let attacker: TestClient;

  beforeEach(async () => {
    s = await serveRoot(makeRoot(ROOT), { limits: { callTimeoutMs: 300 } });
    victim = await connect(s.url('victim'));
    attacker = await connect(s.url('a'));
  });

  async function victimAnswers(n: number): Promise<void> {
    victim.ws.send(String(n));
    expect((await victim.receive(n, 2000)).at(-1)).to.equal(`victim ${n}`);
  }

  /** Sends `m`; waits for the tenant error it earns; returns it. */
  async function fault(m: string): Promise<string> {
    attacker.ws.send(m);
    for (let i = 0; i < 100 && s.errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(s.errors.map((e) => e.tenant)).to.deep.equal(['a']);
    return s.errors[0]!.error;
  }

  it('lost output: a stray rejected promise is reported with its trace, and the event\'s send, log and reply are kept', async () => {
    const error = await fault('stray');
    expect(error).to.equal('ISLET_ERR_UNCAUGHT: unhandled rejection: Error: stray rejection\n    at exports.onMessage (a/h.js:5:37)');
    expect(await attacker.receive(2)).to.deep.equal(['sent before stray', 'reply stray']);
    expect(s.lines()).to.deep.equal(['logged before stray']);
    await victimAnswers(1);
  });

  it('lost output: an async function that throws, unawaited, likewise', async () => {
    const error = await fault('async');
    expect(error).to.equal('ISLET_ERR_UNCAUGHT: unhandled rejection: Error: async throw\n    at a/h.js:6:43\n    at exports.onMessage (a/h.js:6:69)');
    expect(await attacker.receive(2)).to.deep.equal(['sent before async', 'reply async']);
    await victimAnswers(1);
  });

  it('lost output: a microtask loop after the handler returned is stopped, and what the handler did is kept', async () => {
    const error = await fault('loop');
    expect(error).to.equal('ISLET_ERR_TIMEOUT: tenant "a" ran past its budget of 300 ms (limit callTimeoutMs); it was stopped');
    expect(await attacker.receive(2)).to.deep.equal(['sent before loop', 'reply loop']);
    expect(s.lines()).to.deep.equal(['logged before loop']);
    await victimAnswers(1);
    attacker.ws.send('after');
    expect(await attacker.receive(4)).to.deep.equal(['sent before loop', 'reply loop', 'sent before after', 'reply after']);
  });

  it('lost output: an onMessage exception with no onError is reported with its trace', async () => {
    const error = await fault('throw');
    expect(error).to.match(/^ISLET_ERR_UNCAUGHT: Error: thrown with no onError\n {4}at exports\.onMessage \(.*a\/h\.js:8:/);
    expect(await attacker.receive(1)).to.deep.equal(['sent before throw']);
    await victimAnswers(1);
  });

  it('lost output: a handler stopped at its budget with no onError is reported, and its send and log are kept', async () => {
    const error = await fault('spin');
    expect(error).to.equal('ISLET_ERR_TIMEOUT: tenant "a" ran past its budget of 300 ms (limit callTimeoutMs); its handler was stopped (a/h has no onError)');
    expect(await attacker.receive(1)).to.deep.equal(['sent before spin']);
    expect(s.lines()).to.deep.equal(['logged before spin']);
    await victimAnswers(1);
  });

  // The first 2,000 fill the shared output buffer many times over; long ones after them go around it.
  it('output: thousands of short and long sends of one call arrive whole and in order, through the shared buffer and around it', async () => {
    attacker.ws.send('mixed');
    const got = await attacker.receive(3002);
    const expected = Array.from({ length: 3000 }, (_, i) => (i >= 2000 && i % 7 === 0 ? String(i).padEnd(300 + (i % 3), '.') : `s${i}`.padEnd(200, '-')));
    expect(got).to.deep.equal(['sent before mixed', ...expected, 'reply mixed']);
    expect(s.lines()).to.deep.equal(['logged before mixed', 'lone \ud800 surrogate']);
    expect(s.errors).to.deep.equal([]);
  });

  it('lost output: islet run prints everything a script logged, then the mapped trace of its unhandled rejection, and exits 1', async () => {
    const root = makeRoot({
      'p/main.js': 'console.log("one");\nconsole.log("two");\nasync function fail() {\n  throw new Error("late failure");\n}\nfail();\nconsole.log("three");\n',
    });
    const result = await runCli(['run', 'p/main.js'], { cwd: root });
    expect(result.code).to.equal(1);
    expect(result.stdout).to.equal('[p] one\n[p] two\n[p] three\n');
    expect(result.stderr).to.match(/^ISLET_ERR_UNCAUGHT: unhandled rejection: Error: late failure\n {4}at fail \(p\/main\.js:4:9\)/);
    expect(result.stderr).not.to.contain('file://');
  });
});

describe('hazard: lost output to a memory limit', () => {
  it('lost output: the events that ran before, in the same call, as one that ran out of memory keep their output; the ones after run in the new isolate', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT), { limits: { memoryMiB: 16, callTimeoutMs: 5000 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    // "block" holds the worker, so the five after it reach the tenant in one call.
    attacker.ws.send('block');
    for (const m of ['1', '2', 'grow', '3', '4']) attacker.ws.send(m);
    const expected = ['block', '1', '2', 'grow', '3', '4'].flatMap((m) => (m === 'grow' ? ['sent before grow'] : [`sent before ${m}`, `reply ${m}`]));
    expect(await attacker.receive(expected.length)).to.deep.equal(expected);
    expect(s.lines()).to.deep.equal(['block', '1', '2', 'grow', '3', '4'].map((m) => `logged before ${m}`));
    const memory = 'ISLET_ERR_MEMORY_LIMIT: tenant "a" ran out of its 16 MiB heap (limit memoryMiB); its isolate was discarded and is recreated on its next event';
    for (let i = 0; i < 100 && s.errors.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    // The host hears of the lost isolate; the handler is told too (it has no onError, so that is reported).
    expect(s.errors).to.deep.equal([
      { tenant: 'a', code: 'ISLET_ERR_MEMORY_LIMIT', error: memory },
      { tenant: 'a', code: 'ISLET_ERR_MEMORY_LIMIT', error: `${memory}; its handler was stopped (a/h has no onError)` },
    ]);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
  });

  it('lost output: a handler module that runs out of memory while it loads fails once, and its sessions close with 1011', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'b/e.websocket': JSON.stringify({ handler: 'b/h', endpoint: 'b' }),
      'b/h.js': 'const hoard = [];\nfor (;;) hoard.push(new Array(100000).fill(1));\nexports.onMessage = () => "never";',
    });
    const s = await serveRoot(root, { limits: { memoryMiB: 16, callTimeoutMs: 5000 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('b'));
    attacker.ws.send('m');
    expect(await attacker.closed).to.deep.equal([1011, 'handler b/h failed to load']);
    const again = await connect(s.url('b'));
    expect(await again.closed).to.deep.equal([1011, 'handler b/h failed to load']);
    const failures = s.errors.filter((e) => /HANDLER_FAILED/.test(e.error)).map((e) => e.error);
    expect(failures).to.deep.equal([
      'ISLET_ERR_HANDLER_FAILED: b/h failed while it loaded; its sockets are closed: ISLET_ERR_MEMORY_LIMIT: tenant "b" ran out of its 16 MiB heap (limit memoryMiB); its isolate was discarded and is recreated on its next event, while the module loaded',
    ]);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
  });
});

describe('hazard: lost output to getters isolated-vm runs past the budget', () => {
  it('lost output: a stray rejection whose reason loops in a getter holds the worker until the watchdog ends it; what the handler did before is kept, the tenant is blamed, the victim is answered after', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT), { limits: { callTimeoutMs: 200 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    attacker.ws.send('getter');
    expect(await attacker.receive(2, 2000)).to.deep.equal(['sent before getter', 'reply getter']);
    await s.waitForLine((l) => l === 'logged before getter', 2000);
    victim.ws.send('1');
    // Held for the watchdog's bound (200 ms + 3 s), then answered by the restarted worker.
    expect(await victim.receive(1, 8000)).to.deep.equal(['victim 1']);
    for (let i = 0; i < 100 && s.errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(s.errors.map((e) => e.tenant)).to.deep.equal(['a']);
    expect(s.errors[0]!.error).to.match(/^ISLET_ERR_WORKER_DIED: the sandbox worker died \(it stopped answering for \d+ ms/);
  });
});
