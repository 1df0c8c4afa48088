import { expect } from 'chai';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect, makeRoot, serveRoot, settle } from '../helpers.js';

describe('quarantine', () => {
  it('quarantine: a tenant whose code was running when its worker died 3 times in a minute gets 503 and refused scripts; the others never notice; a change of its files lifts it', async function () {
    this.timeout(60_000);
    const root = makeRoot({
      'bad/e.websocket': JSON.stringify({ handler: 'bad/h', endpoint: 'bad' }),
      // "boom" keeps the worker inside this tenant's code long enough to be
      // killed there, as a V8 fatal error or the kernel's OOM killer would.
      'bad/h.js': 'exports.onMessage = (m) => { if (m === "boom") { const end = Date.now() + 4000; while (Date.now() < end); } return "bad " + m; };',
      'bad/script.js': 'console.log("ran");',
      'good/e.websocket': JSON.stringify({ handler: 'good/h', endpoint: 'good' }),
      'good/h.js': 'exports.onMessage = (m) => "good " + m;',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 10_000 } });
    const victim = await connect(s.url('good'));
    const attacker = await connect(s.url('bad'));
    let sent = 0;
    for (let crash = 1; crash <= 3; crash++) {
      const restarted = once(s.engine, 'workerRestart');
      attacker.ws.send('boom');
      victim.ws.send(String(++sent));
      await new Promise((resolve) => setTimeout(resolve, 500));
      process.kill(s.engine.workerPids[0]!, 'SIGKILL');
      await restarted;
      victim.ws.send(String(++sent));
    }
    const victimReplies = await victim.receive(sent);
    expect(victimReplies).to.deep.equal(Array.from({ length: sent }, (_, i) => `good ${i + 1}`));
    const deaths = s.errors.filter((e) => e.tenant === 'bad').map((e) => e.error);
    expect(deaths).to.have.length(3);
    expect(deaths[0]).to.match(/^ISLET_ERR_WORKER_DIED: the sandbox worker died \(signal SIGKILL\) while this tenant's code ran; the events of that call are lost$/);
    expect(s.errors.filter((e) => e.tenant !== 'bad')).to.deep.equal([]);
    // Quarantined: its session closed with 1013, new ones get 503, scripts are refused.
    expect(await attacker.closed).to.deep.equal([1013, 'tenant quarantined']);
    const refused = await connect(s.url('bad')).then(() => 'open', (e: Error) => e.message);
    expect(refused).to.equal('HTTP 503');
    expect(await settle(s.engine.run('bad/script.js'))).to.match(
      /^ISLET_ERR_QUARANTINED: tenant "bad" is quarantined until \d{4}-\d\d-\d\dT[\d:.]+Z: its code brought its sandbox worker down, or held it far past its budget, 3 times within 60 s \(last: signal SIGKILL\); change its files or wait$/,
    );
    victim.ws.send('after');
    expect((await victim.receive(sent + 1)).at(-1)).to.equal('good after');
    // A change to its files lifts the quarantine.
    const reloaded = once(s.engine, 'reloaded');
    writeFileSync(path.join(root, 'bad/h.js'), 'exports.onMessage = (m) => "fixed " + m;');
    await reloaded;
    const again = await connect(s.url('bad'));
    again.ws.send('x');
    expect(await again.receive(1)).to.deep.equal(['fixed x']);
  });
});
