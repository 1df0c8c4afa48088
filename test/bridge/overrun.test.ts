// Hazard: calls that run far past their budget in code the budget cannot
// stop (a builtin such as indexOf over a huge sparse array does not check for
// interrupts), each under the watchdog's bound, again and again, or on a
// timer. Each such call counts toward quarantine like a death of the worker;
// at the third within a minute the tenant is quarantined and its isolate
// discarded with its timers, and the victim beside it is answered again.
import { expect } from 'chai';
import { once } from 'node:events';
import { connect, makeRoot, serveRoot, settle, VICTIM } from '../helpers.js';
import type { TenantFailure } from '../../engine/index.js';

const STALL = 'const a = []; a[2e7] = 1; a.indexOf(2);';

describe('hazard: overruns', () => {
  it('overrun: a tenant whose calls run far past their budget, on a timer, is quarantined at the third; its timers stop and the victim is answered', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': `exports.onMessage = () => { setInterval(() => { ${STALL} }, 0); return "armed"; };`,
      'a/script.js': 'console.log("ran");',
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 100 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    const quarantined = once(s.engine, 'tenantQuarantined');
    attacker.ws.send('arm');
    const [{ tenant, code, error }] = (await quarantined) as [TenantFailure];
    expect(tenant).to.equal('a');
    expect(code).to.equal('ISLET_ERR_QUARANTINED');
    expect(error).to.match(/^ISLET_ERR_QUARANTINED: tenant "a" is quarantined until .*: its code brought its sandbox worker down, or held it far past its budget, 3 times within 60 s \(last: a call ran \d+ ms, over twice its budget of 100 ms, in code the budget could not stop\)/);
    expect(await attacker.closed).to.deep.equal([1013, 'tenant quarantined']);
    const overruns = s.errors.filter((e) => e.tenant === 'a' && /^ISLET_ERR_TIMEOUT: a call ran \d+ ms, over twice its budget/.test(e.error));
    expect(overruns).to.have.length(3);
    // Its interval went with its isolate: once the call running at quarantine is over, the victim is answered promptly, and stays so.
    victim.ws.send('0');
    await victim.receive(1, 5000);
    for (let i = 1; i <= 5; i++) {
      const sent = Date.now();
      victim.ws.send(String(i));
      await victim.receive(i + 1, 2000);
      expect(Date.now() - sent).to.be.below(300);
    }
    expect(await settle(s.engine.run('a/script.js'))).to.match(/^ISLET_ERR_QUARANTINED: /);
  });
});
