// Hazard: WebAssembly memory, which lives outside the V8 heap and so
// outside the isolate's memoryLimit. Each memory a tenant makes is charged
// at its maximum against wasmMemoryMiB; past it the call throws, the worker's
// memory stays flat, and a victim tenant keeps echoing.
import { expect } from 'chai';
import { connect, makeRoot, rssMiB, serveRoot, settle, VICTIM } from '../helpers.js';

// A module that declares its own memory (1 page, at most 2) and exports it;
// the same with no maximum (it could grow to 4 GiB).
const WITH_MAX = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, 4, 1, 1, 1, 2, 7, 7, 1, 3, 0x6d, 0x65, 0x6d, 2, 0];
const NO_MAX = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, 3, 1, 0, 1, 7, 7, 1, 3, 0x6d, 0x65, 0x6d, 2, 0];

describe('hazard: WebAssembly memory', () => {
  it('wasm: memories past wasmMemoryMiB are refused, whatever constructor is used; the worker stays small and the victim echoes', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'a/grab.js': `
        const mems = [];
        try {
          for (let i = 0; i < 40; i++) { const m = new WebAssembly.Memory({ initial: 1024, maximum: 1024 }); new Uint8Array(m.buffer).fill(1); mems.push(m); }
        } catch (e) { console.log(mems.length + " made; " + e.message); }
        // The constructor behind a memory it made is the bounded one too.
        try { new (mems[0].constructor)({ initial: 1024, maximum: 1024 }); } catch (e) { console.log("via constructor: " + e.message.slice(0, 27)); }
      `,
      // One that does not say its maximum is made at its initial size, and cannot grow past it.
      'c/small.js': 'const small = new WebAssembly.Memory({ initial: 1 });\ntry { small.grow(1); } catch (e) { console.log("grow: " + e.constructor.name); }',
      'm/module.js': `
        const own = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(${JSON.stringify(WITH_MAX)})));
        console.log("own memory pages: " + own.exports.mem.buffer.byteLength / 65536);
        try { new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(${JSON.stringify(NO_MAX)}))); } catch (e) { console.log(e.message); }
        WebAssembly.instantiate(new Uint8Array(${JSON.stringify(WITH_MAX)})).then(({ instance }) => console.log("async: " + instance.exports.mem.buffer.byteLength));
      `,
    });
    // Filling 256 MiB of fresh pages is not what is tested: a loaded machine must not make it a timeout.
    const s = await serveRoot(root, { limits: { wasmMemoryMiB: 256, callTimeoutMs: 5000 } });
    const victim = await connect(s.url('victim'));
    const [pid] = s.engine.workerPids;
    const before = rssMiB(pid!);
    expect(await settle(s.engine.run('a/grab.js'))).to.equal('no error');
    expect(s.lines()).to.deep.equal([
      '4 made; ISLET_ERR_LIMIT_WASM_MEMORY: this WebAssembly.Memory may grow to 64 MiB; with the 256 MiB of WebAssembly memory this tenant made already, that is over 256 MiB (limit wasmMemoryMiB)',
      'via constructor: ISLET_ERR_LIMIT_WASM_MEMORY',
    ]);
    await s.engine.run('c/small.js');
    expect(s.lines().at(-1)).to.equal('grow: RangeError');
    expect(rssMiB(pid!) - before).to.be.below(400);
    victim.ws.send('1');
    expect(await victim.receive(1, 2000)).to.deep.equal(['victim 1']);
    await s.engine.run('m/module.js');
    await s.waitForLine((l) => l.startsWith('async: '), 3000);
    expect(s.lines().slice(3)).to.deep.equal([
      'own memory pages: 1',
      'ISLET_ERR_LIMIT_WASM_MEMORY: the memory this module declares may grow to 4096 MiB; with the 0.25 MiB of WebAssembly memory this tenant made already, that is over 256 MiB (limit wasmMemoryMiB)',
      'async: 65536',
    ]);
  });

  it('wasm: compiled modules are charged too (their code lives outside the heap): compiling past wasmMemoryMiB is refused', async () => {
    // A valid module of about 64 KiB: its one custom section holds the padding.
    const padded = 'const n = 65536; const b = new Uint8Array(8 + 1 + 3 + 2 + n); b.set([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0, 0x82, 0x80, 0x04, 1, 0x78]);';
    const root = makeRoot({
      'a/s.js': `${padded}\nconst kept = [];\ntry { for (;;) kept.push(new WebAssembly.Module(b)); } catch (e) { console.log(kept.length + " compiled; " + e.message); }`,
    });
    const s = await serveRoot(root, { limits: { wasmMemoryMiB: 1 } });
    await s.engine.run('a/s.js');
    expect(s.lines()).to.deep.equal([
      // 65,550 bytes, charged 4 times over: 5 pages of 64 KiB each.
      '3 compiled; ISLET_ERR_LIMIT_WASM_MEMORY: compiling this module may grow to 0.3125 MiB; with the 0.9375 MiB of WebAssembly memory this tenant made already, that is over 1 MiB (limit wasmMemoryMiB)',
    ]);
  });

  it('wasm: with wasmMemoryMiB 0 there is no WebAssembly', async () => {
    const root = makeRoot({ 'a/s.js': 'console.log(typeof WebAssembly);' });
    const s = await serveRoot(root, { limits: { wasmMemoryMiB: 0 } });
    await s.engine.run('a/s.js');
    expect(s.lines()).to.deep.equal(['undefined']);
  });
});
