// Hazard: a tenant replaces the builtins the trusted runtime in its isolate
// could use (Map, Array and Function methods, promise then, iterators,
// index getters and setters on Array.prototype), then keeps sending. The
// runtime holds its own copies, so the tenant's events are still delivered
// and answered; the calls islet makes into the isolate (a module replaced on
// reload among them) all have budgets, so nothing freezes the worker; a
// victim tenant keeps echoing throughout.
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect, makeRoot, serveRoot, VICTIM } from '../helpers.js';

const POISON = `
  const spin = function () { for (;;); };
  const mapIterator = Object.getPrototypeOf(new Map().values());
  for (const proto of [Map.prototype, Set.prototype, Array.prototype, String.prototype, Object.prototype]) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === "constructor" || name === "length" || name === "__proto__") continue;
      try { Object.defineProperty(proto, name, { value: spin, writable: true, configurable: true }); } catch {}
    }
  }
  for (let i = 0; i < 64; i++) Object.defineProperty(Array.prototype, i, { get: spin, set: spin, configurable: true });
  Object.defineProperty(Array.prototype, Symbol.iterator, { value: spin });
  Object.defineProperty(mapIterator, "next", { value: spin });
  Promise.prototype.then = spin;
  Function.prototype.call = spin;
  Function.prototype.apply = spin;
  Function.prototype.bind = spin;
  Reflect.apply = spin;
`;

describe('hazard: poisoned builtins', () => {
  it('poisoned builtins: the tenant\'s own events are still answered, a reload of its module does not freeze the worker, and the victim keeps echoing', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/e.websocket': JSON.stringify({ handler: 'a/h', endpoint: 'a' }),
      'a/h.js': `
        let poisoned = false;
        exports.onMessage = (m) => {
          if (m === "poison") { ${POISON}; poisoned = true; return "poisoned"; }
          return "a " + m + (poisoned ? " (poisoned)" : "");
        };
      `,
    });
    const s = await serveRoot(root, { limits: { callTimeoutMs: 300 } });
    const victim = await connect(s.url('victim'));
    const attacker = await connect(s.url('a'));
    attacker.ws.send('poison');
    attacker.ws.send('1');
    expect(await attacker.receive(2)).to.deep.equal(['poisoned', 'a 1 (poisoned)']);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    // A new version of the module is defined in the poisoned isolate.
    writeFileSync(path.join(root, 'a/h.js'), 'exports.onMessage = (m) => "new " + m;');
    await new Promise((resolve) => setTimeout(resolve, 300));
    attacker.ws.send('2');
    expect((await attacker.receive(3, 5000))[2]).to.equal('new 2');
    victim.ws.send('2');
    expect(await victim.receive(2, 2000)).to.deep.equal(['victim 1', 'victim 2']);
    // A second session of the poisoned tenant opens and is answered.
    const second = await connect(s.url('a'));
    second.ws.send('3');
    expect(await second.receive(1, 5000)).to.deep.equal(['new 3']);
  });
});
