// The quarantine's rules over time, with the clock passed in: three deaths
// in a minute quarantine a tenant; a change of its files lifts one
// quarantine per quarantine time and never clears the count of deaths.
import { expect } from 'chai';
import { Quarantine } from '../../engine/quarantine.js';

describe('quarantine policy', () => {
  it('quarantine: a change of its files lifts the first quarantine, not one that follows within the quarantine time, and never resets the deaths', () => {
    const minute = 60_000;
    const q = new Quarantine(5 * minute);
    let now = 1_000_000;
    const crash = (): boolean => q.crashed('t', 'signal SIGKILL', (now += 1000));
    expect([crash(), crash()]).to.deep.equal([false, false]);
    // Its files change between deaths: the count goes on.
    q.lift('t', now);
    expect(crash()).to.equal(true);
    expect(q.refusal('t', now)?.message).to.match(/; change its files or wait$/);
    q.lift('t', (now += 1000));
    expect(q.refusal('t', now)).to.equal(null);
    // Quarantined again within the quarantine time: a change of its files no longer lifts it.
    expect([crash(), crash(), crash()]).to.deep.equal([false, false, true]);
    expect(q.refusal('t', now)?.message).to.match(/; a change of its files lifted its last quarantine, so it waits$/);
    q.lift('t', (now += 1000));
    expect(q.refusal('t', now)).not.to.equal(null);
    // The time passes.
    now += 5 * minute;
    expect(q.refusal('t', now)).to.equal(null);
  });
});
