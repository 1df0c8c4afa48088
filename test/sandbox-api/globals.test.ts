import { expect } from 'chai';
import { makeRoot, runCli, startEngine } from '../helpers.js';

describe('sandbox globals', () => {
  it('console: each level reaches the host with the tenant name; the CLI prints warn and error on stderr', async () => {
    const root = makeRoot({
      'p/log.js': 'console.log("l", 1, true, null, undefined, { a: [1] });\nconsole.info("i");\nconsole.warn("w");\nconsole.error(new Error("e"));\nconsole.debug("d", function named() {});\n',
    });
    const t = await startEngine(root);
    await t.engine.run('p/log.js');
    expect(t.logs.map((l) => [l.tenant, l.level, l.text.split('\n')[0]])).to.deep.equal([
      ['p', 'log', 'l 1 true null undefined {"a":[1]}'],
      ['p', 'info', 'i'],
      ['p', 'warn', 'w'],
      ['p', 'error', 'Error: e'],
      ['p', 'debug', 'd [Function named]'],
    ]);
    const cli = await runCli(['run', 'p/log.js'], { cwd: root });
    expect(cli.stdout).to.equal('[p] l 1 true null undefined {"a":[1]}\n[p] i\n[p] d [Function named]\n');
    expect(cli.stderr).to.match(/^\[p\] w\n\[p\] Error: e\n/);
  });

  it('timers, promises and queueMicrotask run in order', async () => {
    const root = makeRoot({
      'p/order.js': `
        const seen = [];
        setTimeout((a, b) => seen.push("timeout " + a + b), 0, "x", "y");
        const cancelled = setTimeout(() => seen.push("cancelled"), 0);
        clearTimeout(cancelled);
        Promise.resolve().then(() => seen.push("promise"));
        queueMicrotask(() => seen.push("microtask"));
        seen.push("sync");
        let n = 0;
        const every = setInterval(() => { if (++n === 3) { clearInterval(every); seen.push("interval x3"); } }, 1);
        (async () => { await new Promise((r) => setTimeout(r, 20)); seen.push("awaited"); console.log(seen.join(", ")); })();
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/order.js');
    expect(t.lines()).to.deep.equal(['sync, promise, microtask, timeout xy, interval x3, awaited']);
  });

  it('nothing of Node is reachable, and the bootstrap globals are gone', async () => {
    const root = makeRoot({
      'p/probe.js': `
        const names = ["process", "Buffer", "global", "setImmediate", "__isletConnect", "__isletSetTimer", "__isletNotify", "__isletRuntime", "__isletConfig"];
        console.log(names.map((n) => n + ":" + typeof globalThis[n]).join(" "));
        const dynamicName = ["f", "s"].join("");
        try { require(dynamicName); } catch (e) { console.log(e.message); }
        console.log(typeof this.constructor.constructor("return typeof process")());
      `,
    });
    const t = await startEngine(root);
    await t.engine.run('p/probe.js');
    expect(t.lines()).to.deep.equal([
      'process:undefined Buffer:undefined global:undefined setImmediate:undefined __isletConnect:undefined __isletSetTimer:undefined __isletNotify:undefined __isletRuntime:undefined __isletConfig:undefined',
      'ISLET_ERR_MODULE_NOT_FOUND: module "fs" is not available in the sandbox (only net/v4/websockets, net/websockets, sdk/net, @aerokit/sdk/net, http/v4/response, http/response, sdk/http, @aerokit/sdk/http and the tenant\'s own bundled modules are)',
      'string',
    ]);
  });

  it('timers: bad arguments and the timer limit give clear errors', async () => {
    const root = makeRoot({
      'p/limits.js': `
        try { setTimeout("alert(1)", 1); } catch (e) { console.log(e.constructor.name + ": " + e.message); }
        for (let i = 0; i < 3; i++) setTimeout(() => {}, 1);
        try { setTimeout(() => {}, 1); } catch (e) { console.log(e.message); }
      `,
    });
    const t = await startEngine(root, { limits: { maxTimers: 3 } });
    await t.engine.run('p/limits.js');
    expect(t.lines()).to.deep.equal([
      'TypeError: ISLET_ERR_BAD_ARGUMENT: setTimeout takes a function, got string',
      'ISLET_ERR_LIMIT_TIMERS: tenant "p" already has 3 timers (limit maxTimers)',
    ]);
  });

  it('tenants are separate isolates: globals of one project are invisible to another', async () => {
    const root = makeRoot({
      'a/set.js': 'globalThis.shared = "a was here"; console.log(typeof shared);',
      'b/get.js': 'console.log(typeof globalThis.shared);',
      'a/get.js': 'console.log(globalThis.shared);',
    });
    const t = await startEngine(root);
    await t.engine.run('a/set.js');
    await t.engine.run('b/get.js');
    await t.engine.run('a/get.js');
    expect(t.logs.map((l) => `${l.tenant}: ${l.text}`)).to.deep.equal(['a: string', 'b: undefined', 'a: a was here']);
  });
});
