// Hazard: one tenant's code that runs past its budget again and again, on
// the same worker as a victim. A stopped call costs the others one budget a
// turn, not one per queued event; module code that spins or throws at load
// time fails that module once, and its sessions close with 1011.
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect, makeRoot, serveRoot, VICTIM } from '../helpers.js';

const BUDGET_MS = 200;

describe('hazard: turns', () => {
  it('turns: fifteen queued events that each spin forever cost the victim one budget per turn, not fifteen', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': 'exports.onMessage = () => { for (;;); };',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: BUDGET_MS } });
    const victim = await connect(s.url('victim'));
    victim.ws.send('warm');
    await victim.receive(1);
    const attacker = await connect(s.url('a'));
    for (let i = 0; i < 15; i++) attacker.ws.send(`spin ${i}`);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the worker has taken them, and is spinning
    const latencies: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const sent = Date.now();
      victim.ws.send(String(i));
      await victim.receive(i + 1, 10_000);
      latencies.push(Date.now() - sent);
    }
    // Behind at most the call that is running and one more: never the fifteen (3 s).
    expect(Math.max(...latencies), JSON.stringify(latencies)).to.be.below(4 * BUDGET_MS);
    expect(victim.messages.slice(1)).to.deep.equal(['victim 1', 'victim 2', 'victim 3', 'victim 4', 'victim 5']);
  });

  it('turns: a handler module that spins at load time fails once, its sessions close with 1011, new ones too; the victim is not held up; a change lets it load', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': 'for (;;);\nexports.onMessage = () => "never";',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: BUDGET_MS } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    for (let i = 0; i < 10; i++) attacker.ws.send(`m ${i}`);
    expect((await attacker.closed)[0]).to.equal(1011);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    const failures = s.errors.filter((e) => e.tenant === 'a').map((e) => e.error);
    expect(failures).to.have.length(1);
    expect(failures[0]).to.match(/^ISLET_ERR_HANDLER_FAILED: a\/h failed while it loaded; its sockets are closed: ISLET_ERR_TIMEOUT: its code ran past the call budget while the module loaded \(limit callTimeoutMs\)$/);
    const again = await connect(s.url('a'));
    expect(await again.closed).to.deep.equal([1011, 'handler a/h failed to load']);
    expect(s.errors.filter((e) => e.tenant === 'a')).to.have.length(1);
    writeFileSync(path.join(root, 'a/h.js'), 'exports.onMessage = (m) => "fixed " + m;');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const fixed = await connect(s.url('a'));
    fixed.ws.send('x');
    expect(await fixed.receive(1)).to.deep.equal(['fixed x']);
  });

  it('turns: a handler module that throws at load time is reported once, not once per event, and its sessions close with 1011', async () => {
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': 'console.log("loading");\nthrow new Error("broken at load");',
    });
    const s = await serveRoot(root);
    const attacker = await connect(s.url('a'));
    for (let i = 0; i < 10; i++) attacker.ws.send(`m ${i}`);
    expect(await attacker.closed).to.deep.equal([1011, 'handler a/h failed to load']);
    const victim = await connect(s.url('victim'));
    victim.ws.send('1');
    expect(await victim.receive(1)).to.deep.equal(['victim 1']);
    expect(s.lines().filter((l) => l === 'loading')).to.have.length(1);
    const failures = s.errors.filter((e) => e.tenant === 'a').map((e) => e.error);
    expect(failures).to.have.length(1);
    expect(failures[0]).to.match(/^ISLET_ERR_HANDLER_FAILED: a\/h failed while it loaded; its sockets are closed: ISLET_ERR_UNCAUGHT: Error: broken at load\n {4}at .*a\/h\.js:2:7/);
  });
});
