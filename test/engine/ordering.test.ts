import { expect } from 'chai';
import { connect, makeRoot, serveRoot } from '../helpers.js';

const SESSIONS = 200;
const MESSAGES = 100;

describe('endpoint ordering', () => {
  it(`ordering: ${SESSIONS} sessions × ${MESSAGES} numbered messages at once: each handler call sees its own session's numbers in order, none lost, none duplicated, none overlapping`, async function () {
    this.timeout(120_000);
    const root = makeRoot({
      'p/order.websocket': JSON.stringify({ handler: 'p/order', endpoint: 'order' }),
      'p/order.js': `
        const seen = new Map();
        const busy = new Set();
        exports.onOpen = (id) => seen.set(id, { next: 0, faults: [] });
        exports.onMessage = async (message, id) => {
          const state = seen.get(id);
          if (busy.has(id)) state.faults.push("overlap at " + message);
          busy.add(id);
          // Hold some calls open across a timer: the session's next event must wait.
          if (Number(message) % 7 === 0) await new Promise((r) => setTimeout(r, 1));
          else await null;
          busy.delete(id);
          if (message === "end") return JSON.stringify({ count: state.next, faults: state.faults });
          if (Number(message) !== state.next) state.faults.push("expected " + state.next + " got " + message);
          state.next = Number(message) + 1;
        };
      `,
    });
    const s = await serveRoot(root);
    const clients = await Promise.all(Array.from({ length: SESSIONS }, () => connect(s.url('order'))));
    for (let n = 0; n < MESSAGES; n++) for (const c of clients) c.ws.send(String(n));
    for (const c of clients) c.ws.send('end');
    const reports = await Promise.all(clients.map((c) => c.receive(1, 60_000)));
    for (const c of clients) c.ws.close();
    const results = reports.map(([r]) => JSON.parse(r!) as { count: number; faults: string[] });
    expect(results.filter((r) => r.count !== MESSAGES || r.faults.length > 0)).to.deep.equal([]);
    expect(results).to.have.length(SESSIONS);
    expect(s.errors).to.deep.equal([]);
  });
});
