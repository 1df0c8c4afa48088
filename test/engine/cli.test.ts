import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tagged } from '../../engine/log-output.js';
import { CLI, connect, echoPeer, makeRoot, runCli, seedProject, VICTIM } from '../helpers.js';

describe('islet run', () => {
  it('islet run: the seed client and handler print their lines in order and exit 0', async () => {
    const peer = await echoPeer();
    try {
      const root = makeRoot(seedProject(peer.url));
      const result = await runCli(['run', 'my-project/client.js'], { cwd: root });
      expect(result.code, result.stderr).to.equal(0);
      // Handlers' lines are tagged "[project handler#id]"; the order is what is checked here.
      const lines = (result.stdout + result.stderr).split('\n').map((line) => line.replace(/^\[(\S+) \S+#\d+\]/, '[$1]'));
      const order = [
        `[my-project] Connect to: ${peer.url}`,
        '[my-project] Connection openned.',
        '[my-project] Message received: hello',
        '[my-project] Connection closed.',
      ].map((line) => lines.indexOf(line));
      expect(order.every((at) => at >= 0), result.stdout + result.stderr).to.equal(true);
      // stdout and stderr are separate pipes; the warn line is on stderr.
      expect(result.stderr).to.match(/^\[my-project my-project\/ws-handler#\d+\] Connection closed\.$/m);
      expect(order.slice(0, 3)).to.deep.equal([...order.slice(0, 3)].sort((a, b) => a - b));
      expect(peer.received).to.deep.equal(['hello']);
    } finally {
      await peer.close();
    }
  });

  it('islet run: --root names the projects root and the script path is taken from the current folder', async () => {
    const root = makeRoot({ 'p/hello.ts': 'const n: number = 41;\nconsole.log("answer", n + 1);\n' });
    const result = await runCli(['run', path.join(root, 'p/hello.ts'), '--root', root]);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.equal('[p] answer 42\n');
  });

  it('islet run: an uncaught error prints a trace mapped to the script and exits 1', async () => {
    const root = makeRoot({
      'p/lib.ts': 'export function explode(what: string): never {\n  throw new Error("boom: " + what);\n}\n',
      'p/main.ts': 'import { explode } from "./lib";\n\nfunction start() {\n  explode("main");\n}\nstart();\n',
    });
    const result = await runCli(['run', 'p/main.ts'], { cwd: root });
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('ISLET_ERR_UNCAUGHT: Error: boom: main');
    expect(result.stderr).to.match(/at explode \(p\/lib\.ts:2:9\)/);
    expect(result.stderr).to.match(/at start \(p\/main\.ts:4:3\)/);
    expect(result.stderr).not.to.contain('islet-bundle:');
  });

  it('islet run: waits for timers before exiting', async () => {
    const root = makeRoot({
      'p/timers.js': 'let n = 0;\nconst t = setInterval(() => { console.log("tick", ++n); if (n === 3) clearInterval(t); }, 5);\nsetTimeout(() => console.log("late"), 50);\n',
    });
    const result = await runCli(['run', 'p/timers.js'], { cwd: root });
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.equal('[p] tick 1\n[p] tick 2\n[p] tick 3\n[p] late\n');
  });

  it('islet run: a script outside the root is refused', async () => {
    const root = makeRoot({ 'p/a.js': '' });
    const other = makeRoot({ 'q/b.js': 'console.log("ran")' });
    const result = await runCli(['run', path.join(other, 'q/b.js'), '--root', root]);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('ISLET_ERR_SCRIPT_NOT_FOUND');
    expect(result.stderr).to.contain('lies outside the projects root');
    expect(result.stdout).to.equal('');
  });

  it('islet run: a missing script is named', async () => {
    const root = makeRoot({ 'p/a.js': '' });
    const result = await runCli(['run', 'p/nope.js'], { cwd: root });
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain('ISLET_ERR_SCRIPT_NOT_FOUND: script');
    expect(result.stderr).to.contain('nope.js does not exist');
  });

  it('islet --help documents run and its options', async () => {
    const result = await runCli(['--help']);
    expect(result.code).to.equal(0);
    expect(result.stdout).to.contain('islet run <script> [--root DIR]');
    expect(result.stdout).to.contain('--workers N');
  });

  it('islet: an unknown command or option exits 2 with the usage', async () => {
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.contain('unknown command "frobnicate"');
    const badOption = await runCli(['run', 'x.js', '--nope']);
    expect(badOption.code).to.equal(2);
    expect(badOption.stderr).to.contain("Unknown option '--nope'");
  });
});

describe('islet serve', () => {
  it('islet serve: prints each endpoint URL and bad descriptors, serves them, and on SIGTERM drains: sessions close with 1001, their onClose runs, it exits 0', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': 'exports.onMessage = (m) => "got " + m;\nexports.onOpen = () => console.log("opened");\nexports.onClose = (id) => console.log("closed " + id);',
      'p/bad.websocket': JSON.stringify({ endpoint: 'x' }),
    });
    const child = spawn(process.execPath, [CLI, 'serve', root, '--port', '0'], { cwd: root });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = once(child, 'close');
    try {
      const url = await new Promise<string>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const found = /(ws:\/\/127\.0\.0\.1:\d+\/websockets\/v4\/service\/e) {2}\(p\/e\.websocket → p\/h\)/.exec(stdout);
          if (found && stdout.includes('listening on')) resolve(found[1]!);
        }),
      );
      expect(stderr).to.contain('islet: ISLET_ERR_DESCRIPTOR: p/bad.websocket: field "handler": is required');
      const client = await connect(url);
      client.ws.send('hi');
      expect(await client.receive(1)).to.deep.equal(['got hi']);
      const other = await connect(url);
      child.kill('SIGTERM');
      expect(await client.closed).to.deep.equal([1001, 'islet engine closing']);
      expect((await other.closed)[0]).to.equal(1001);
      const [code] = (await exited) as [number];
      expect(code).to.equal(0);
      // A handler's lines carry the handler and the session.
      expect(stdout).to.match(/^\[p p\/h#\d+\] opened$/m);
      expect(stdout.match(/^\[p p\/h#(\d+)\] closed \1$/gm)).to.have.length(2);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('islet serve: a reader of its output that stops reading does not hold the host; lines past 8 MiB are dropped and counted', async function () {
    this.timeout(30_000);
    const root = makeRoot({
      ...VICTIM,
      'f/e.websocket': JSON.stringify({ handler: 'f/h', endpoint: 'f' }),
      'f/h.js': 'const line = "x".repeat(1024);\nexports.onOpen = () => setInterval(() => { for (let i = 0; i < 200; i++) console.log(line); }, 5);\n',
    });
    const child = spawn(process.execPath, [CLI, 'serve', root, '--port', '0'], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'close');
    let stdout = '';
    const onData = (d: Buffer): void => {
      stdout += d.toString();
    };
    child.stdout!.on('data', onData);
    try {
      const port = await new Promise<number>((resolve) => {
        const check = (): void => {
          const found = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(stdout);
          if (found) resolve(Number(found[1]));
          else setTimeout(check, 20);
        };
        check();
      });
      // From here nobody reads what it prints.
      child.stdout!.off('data', onData);
      child.stdout!.pause();
      const victim = await connect(`ws://127.0.0.1:${port}/websockets/v4/service/victim`);
      await connect(`ws://127.0.0.1:${port}/websockets/v4/service/f`);
      for (let i = 1; i <= 5; i++) {
        await new Promise((resolve) => setTimeout(resolve, 400));
        victim.ws.send(String(i));
        expect((await victim.receive(i, 2000)).at(-1)).to.equal(`victim ${i}`);
      }
      // Read again: the dropped lines were counted.
      let rest = '';
      child.stdout!.on('data', (d: Buffer) => (rest += d.toString()));
      child.stdout!.resume();
      for (let i = 0; i < 100 && !/log lines dropped/.test(rest); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(rest).to.match(/^islet: \d+ log lines dropped: the reader of this output is slower than what the tenants print$/m);
      child.kill('SIGTERM');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('islet serve: run with its output in a file inside the served root, it does not reload on its own writes, and prints a reload only when endpoints change', async function () {
    this.timeout(20_000);
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': 'exports.onOpen = () => console.log("opened");',
      'p/bad.websocket': '{ not json',
    });
    const log = path.join(root, 'islet.log');
    const out = openSync(log, 'w');
    const child = spawn(process.execPath, [CLI, 'serve', '.', '--port', '0'], { cwd: root, stdio: ['ignore', out, out] });
    try {
      const text = (): string => readFileSync(log, 'utf8');
      const waitFor = async (pattern: RegExp): Promise<RegExpExecArray> => {
        for (let i = 0; i < 100; i++) {
          const found = pattern.exec(text());
          if (found) return found;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        throw new Error(`no ${pattern} in ${text()}`);
      };
      const url = (await waitFor(/(ws:\/\/127\.0\.0\.1:\d+\/websockets\/v4\/service\/e) /))[1]!;
      await waitFor(/listening on/);
      // Session output goes to the log too, inside the root.
      const client = await connect(url);
      await waitFor(/\[p p\/h#\d+\] opened/);
      client.ws.close();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const settled = text();
      expect(settled).not.to.contain('reloaded');
      expect(settled.match(/ISLET_ERR_DESCRIPTOR/g)).to.have.length(1);
      // A change of the handler's code reloads silently; a new endpoint is printed once.
      writeFileSync(path.join(root, 'p/h.js'), 'exports.onOpen = () => console.log("opened v2");');
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(text()).to.equal(settled);
      writeFileSync(path.join(root, 'p/f.websocket'), JSON.stringify({ handler: 'p/h', endpoint: 'f' }));
      await waitFor(/islet: reloaded; endpoints:\n.*service\/e .*\n.*service\/f /);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(text().match(/reloaded/g)).to.have.length(1);
      expect(text().match(/ISLET_ERR_DESCRIPTOR/g)).to.have.length(1);
    } finally {
      child.kill('SIGKILL');
      closeSync(out);
    }
  });

  it('islet run --log-format json: one JSON object a line, with time, level, tenant, handler, session and msg', async () => {
    const peer = await echoPeer();
    const root = makeRoot({
      'p/h.js': 'const ws = require("net/v4/websockets");\nexports.onOpen = (id) => { console.warn("client open"); ws.getClient(id).close(); };',
      'p/main.js': `console.log("from the script");\nrequire("net/v4/websockets").createWebsocket("${peer.url}", "p/h");\n`,
    });
    const result = await runCli(['run', 'p/main.js', '--log-format', 'json'], { cwd: root });
    await peer.close();
    const records = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const opened = records.find((r) => r.msg === 'client open')!;
    expect(opened).to.include({ level: 'warn', tenant: 'p', handler: 'p/h' });
    expect(opened.session).to.be.a('number');
    const script = records.find((r) => r.msg === 'from the script')!;
    expect(script).to.include({ level: 'info', tenant: 'p' });
    expect(script.handler).to.equal(undefined);
    expect(new Date(script.time as string).getTime()).to.be.closeTo(Date.now(), 60_000);
    expect(records.every((r) => typeof r.time === 'string' && typeof r.level === 'string' && typeof r.msg === 'string')).to.equal(true);
    const bad = await runCli(['run', 'p/main.js', '--log-format', 'xml'], { cwd: root });
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.match(/^islet: --log-format takes text or json, got "xml"/);
  });
});

describe('CLI output', () => {
  it('every line of a tenant\'s text is tagged, whatever line break it uses: it cannot print lines that pass for another tenant\'s', () => {
    expect(tagged('[a] ', 'boom\n[victim] forged\r[victim] also\r\nend\u2028x')).to.equal('[a] boom\n[a] [victim] forged\n[a] [victim] also\n[a] end\n[a] x\n');
  });
});
