// Hazard: tenant code that holds its worker where the per-call budget does
// not reach (here a builtin that never checks for interrupts: filling a
// hundred million elements takes V8 about 13 s before the heap limit stops
// it). The host's watchdog sees no progress for the budget plus a few
// seconds, kills the worker, blames the tenant, and the victim's events
// go to the restarted worker.
import { expect } from 'chai';
import { connect, makeRoot, serveRoot, settle, VICTIM } from '../helpers.js';

describe('hazard: watchdog', () => {
  it('watchdog: a worker stuck past its budget is killed within the bound, the tenant is blamed, and the victim is answered after', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/stuck.js': 'new Array(1e8).fill(0);',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 200 } });
    const victim = await connect(s.url('victim'));
    victim.ws.send('before');
    await victim.receive(1);
    const started = Date.now();
    const run = settle(s.engine.run('a/stuck.js'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    victim.ws.send('during');
    expect(await run).to.match(/^ISLET_ERR_WORKER_DIED: sandbox worker 0 died \(it stopped answering for \d+ ms \(the watchdog's bound is 3200 ms\) and was killed\) while running a script; it is being restarted$/);
    const stalled = Date.now() - started;
    expect(stalled).to.be.within(3200, 6000);
    expect(await victim.receive(2, 5000)).to.deep.equal(['victim before', 'victim during']);
    expect(s.errors.map((e) => e.tenant)).to.deep.equal(['a']);
    expect(s.errors[0]!.error).to.match(
      /^ISLET_ERR_WORKER_DIED: the sandbox worker died \(it stopped answering for \d+ ms \(the watchdog's bound is 3200 ms\) and was killed\) while this tenant's code ran; the events of that call are lost$/,
    );
  });

  it('watchdog: an idle worker is pinged and left alone', async () => {
    const root = makeRoot({ 'p/ok.js': 'console.log("ok");' });
    // The watchdog's bound is 3,050 ms: waited out before the run.
    const s = await serveRoot(root, { limits: { callTimeoutMs: 50 } });
    const [pid] = s.engine.workerPids;
    await new Promise((resolve) => setTimeout(resolve, 4500));
    await s.engine.run('p/ok.js');
    expect(s.engine.workerPids).to.deep.equal([pid]);
    expect(s.lines()).to.deep.equal(['ok']);
  });
});
