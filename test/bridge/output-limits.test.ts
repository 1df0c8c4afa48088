// Hazard: a tenant that makes the host or its worker hold a lot of memory
// through its output: one string logged or sent thousands of times (cheap in
// the isolate, where the copies share one string, and megabytes once copied
// out), output without end from a timer (faster than the host reads it), and
// sends to its own sessions whose peers do not read. Each is cut at its
// limit or slowed down, and a victim tenant keeps echoing.
import { expect } from 'chai';
import WebSocket from 'ws';
import { connect, makeRoot, rssMiB, serveRoot, VICTIM } from '../helpers.js';

const ROOT = {
  ...VICTIM,
  'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
  'a/h.js': `const ws = require("net/v4/websockets");
const big = "x".repeat(64 * 1024);
exports.onMessage = (m, id) => {
  if (m === "log") for (let i = 0; i < 5000; i++) console.log(big);
  if (m === "send") for (let i = 0; i < 5000; i++) ws.getSession(id).send(big);
  if (m === "empties") for (const end = Date.now() + 900; Date.now() < end; ) console.log("");
  if (m.startsWith("relay")) for (const s of ws.getSessions()) if (s.id !== id) ws.getSession(s.id).send(big);
  if (m === "flood") for (const s of ws.getSessions()) if (s.id !== id) for (let i = 0; i < 32; i++) ws.getSession(s.id).send(big);
  return "done " + m;
};
exports.onError = (e, id) => console.log("onError " + id + ": " + e.slice(0, 200));
`,
};

describe('hazard: output limits', () => {
  it('output: one 64 KiB string logged or sent 5,000 times is cut at maxOutputBytes and reported once; the victim is not held up', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT), { limits: { maxOutputBytes: 1024 * 1024 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    const limited = 'ISLET_ERR_LIMIT_OUTPUT: the output of one call is over 1048576 (limit maxOutputBytes, each send, reply or console line counting 256 more than its text); the rest of its sends, replies and console lines were dropped';
    const errorsAfter = async (n: number): Promise<void> => {
      for (let i = 0; i < 100 && s.errors.length < n; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    // One call each: its output ends where the limit is, its reply dropped with the rest.
    attacker.ws.send('log');
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    await errorsAfter(1);
    attacker.ws.send('send');
    await errorsAfter(2);
    expect(s.errors).to.deep.equal([
      { tenant: 'a', code: 'ISLET_ERR_LIMIT_OUTPUT', error: limited },
      { tenant: 'a', code: 'ISLET_ERR_LIMIT_OUTPUT', error: limited },
    ]);
    // 15 × (64 KiB + 256) fit in 1 MiB; the 16th would be over.
    const logged = s.lines().filter((l) => l.startsWith('xxx'));
    expect(logged).to.have.length(15);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(attacker.messages).to.have.length(15);
    expect(attacker.messages.every((m) => m.length === 64 * 1024)).to.equal(true);
    attacker.ws.send('after');
    expect((await attacker.receive(attacker.messages.length + 1)).at(-1)).to.equal('done after');
  });

  it('output: empty console lines as fast as a call can make them are cut at maxOutputBytes too (each line counts), and the victim is answered within 2 s', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT));
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    attacker.ws.send('empties');
    await new Promise((resolve) => setTimeout(resolve, 300));
    victim.ws.send('1');
    const sent = Date.now();
    expect(await victim.receive(1, 4000)).to.deep.equal(['victim 1']);
    const waited = Date.now() - sent;
    // Its reply went with the rest of the call's output past the limit; that was reported once.
    for (let i = 0; i < 100 && s.errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(s.errors.map((e) => e.error)).to.deep.equal([
      'ISLET_ERR_LIMIT_OUTPUT: the output of one call is over 33554432 (limit maxOutputBytes, each send, reply or console line counting 256 more than its text); the rest of its sends, replies and console lines were dropped',
    ]);
    expect(attacker.messages).to.deep.equal([]);
    expect(waited, 'the victim waited').to.be.below(2000);
    // 32 MiB at 256 a line: at most 131,072 of them, not a million.
    expect(s.lines().filter((l) => l === '').length).to.be.within(1000, 131_072);
  });

  it('output: a timer that logs without end is held to the pace the host reads at; the worker stays small and the victim echoes', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot({ ...VICTIM, 'a/flood.js': 'const line = "x".repeat(1024);\nsetInterval(() => { for (let i = 0; i < 1000; i++) console.log(line); }, 0);' }));
    const victim = await connect(s.url('victim'));
    const [pid] = s.engine.workerPids;
    const before = rssMiB(pid!);
    // The lines are counted, not kept.
    let logged = 0;
    const forget = setInterval(() => {
      logged += s.logs.length;
      s.logs.length = 0;
    }, 50);
    try {
      void s.engine.run('a/flood.js').catch(() => {});
      let grown = 0;
      for (let i = 1; i <= 8; i++) {
        await new Promise((resolve) => setTimeout(resolve, 400));
        victim.ws.send(String(i));
        expect((await victim.receive(i, 2000)).at(-1)).to.equal(`victim ${i}`);
        grown = Math.max(grown, rssMiB(pid!) - before);
      }
      // Unheld, it grew by 300-500 MB a second.
      expect(grown).to.be.below(300);
      expect(logged).to.be.above(10_000);
    } finally {
      clearInterval(forget);
    }
  });

  it('output: sends to a tenant\'s sessions whose peers do not read stop at maxTenantQueuedBytes, though each socket is under maxQueuedBytes', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT), { limits: { maxQueuedBytes: 64 * 1024 * 1024, maxTenantQueuedBytes: 4 * 1024 * 1024 } });
    const victim = await connect(s.url('victim'));
    // Four peers that finish the handshake, then never read.
    const stalled: WebSocket[] = [];
    for (let i = 0; i < 4; i++) {
      const ws = new WebSocket(s.url('a'));
      await new Promise((resolve) => ws.once('open', resolve));
      (ws as unknown as { _socket: { pause(): void } })._socket.pause();
      stalled.push(ws);
    }
    const attacker = await connect(s.url('a'));
    for (let i = 0; i < 4; i++) attacker.ws.send('flood'); // 4 × 4 × 32 × 64 KiB = 32 MiB
    await s.waitForLine((l) => /maxTenantQueuedBytes/.test(l), 10_000);
    const told = s.lines().filter((l) => l.startsWith('onError'));
    expect(told.length).to.be.within(1, 4);
    expect(told[0]).to.match(/^onError \d+: ISLET_ERR_LIMIT_QUEUED: \d+ bytes already wait to be sent on tenant "a"'s sockets, whose peers are not reading \(limit maxTenantQueuedBytes 4194304\); messages are dropped until it drains$/);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    for (const ws of stalled) ws.terminate();
  });

  it('output: a tenant that answers each message with more than its peers read is slowed down (its inbound waits), not dropped', async function () {
    this.timeout(30_000);
    const s = await serveRoot(makeRoot(ROOT), { limits: { maxQueuedBytes: 64 * 1024 * 1024, maxTenantQueuedBytes: 8 * 1024 * 1024 } });
    const victim = await connect(s.url('victim'));
    const stalled = new WebSocket(s.url('a'));
    await new Promise((resolve) => stalled.once('open', resolve));
    const stalledSocket = (stalled as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    stalledSocket.pause();
    const sender = await connect(s.url('a'));
    // A message every 2 ms, each relayed as 64 KiB to a peer that reads nothing: 25 MiB in all, three times the tenant's limit.
    const COUNT = 400;
    for (let i = 0; i < COUNT; i++) {
      sender.ws.send(`relay ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Held back: the sender's later messages wait, unanswered; nothing was dropped.
    expect(sender.messages.length).to.be.below(COUNT);
    expect(s.lines().filter((l) => l.startsWith('onError'))).to.deep.equal([]);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    // The stalled peer reads again: everything arrives, in order.
    let relayed = 0;
    stalled.on('message', () => relayed++);
    stalledSocket.resume();
    const replies = await sender.receive(COUNT, 20_000);
    expect(replies).to.deep.equal(Array.from({ length: COUNT }, (_, i) => `done relay ${i}`));
    for (let i = 0; i < 200 && relayed < COUNT; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(relayed).to.equal(COUNT);
    expect(s.lines().filter((l) => l.startsWith('onError'))).to.deep.equal([]);
    stalled.terminate();
  });

  it('output: a million tiny sends to a peer that does not read are held to maxQueuedBytes counted with what each message costs the host', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': `const ws = require("net/v4/websockets");
exports.onOpen = (id) => setInterval(() => { const s = ws.getSession(id); if (s) for (let i = 0; i < 3000; i++) s.send("x"); }, 0);
exports.onError = (e) => console.log(e.slice(0, 80));
`,
    });
    const s = await serveRoot(root);
    const victim = await connect(s.url('victim'));
    const stalled = new WebSocket(s.url('a'));
    await new Promise((resolve) => stalled.once('open', resolve));
    (stalled as unknown as { _socket: { pause(): void } })._socket.pause();
    const before = process.memoryUsage().rss / 1048576;
    let grown = 0;
    for (let i = 1; i <= 8; i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      victim.ws.send(String(i));
      expect((await victim.receive(i, 2000)).at(-1)).to.equal(`victim ${i}`);
      grown = Math.max(grown, process.memoryUsage().rss / 1048576 - before);
    }
    // Counted in payload bytes alone, 4 MiB of one-byte messages held the host at over 600 MB.
    expect(grown).to.be.below(200);
    expect(s.lines()[0]).to.match(/^ISLET_ERR_LIMIT_QUEUED: \d+ bytes already wait to be sent on session/);
    stalled.terminate();
  });
});
