import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { bulkMessage, bulkReplies, bulkRoot, CLI, connect, echoPeer, makeRoot, serveRoot, startEngine } from '../helpers.js';

describe('sandbox worker death', () => {
  it('worker death: engine.run while the worker is restarting runs on the restarted worker', async () => {
    const root = makeRoot({ 'p/s.js': 'console.log("ran");' });
    const t = await startEngine(root);
    await t.engine.run('p/s.js');
    const [pid] = t.engine.workerPids;
    const exited = once(t.engine, 'workerExit');
    process.kill(pid!, 'SIGKILL');
    await exited;
    // The worker is starting again now: the runs wait for it.
    await Promise.all([t.engine.run('p/s.js'), t.engine.run('p/s.js')]);
    expect(t.lines()).to.deep.equal(['ran', 'ran', 'ran']);
    expect(t.engine.workerPids[0]).not.to.equal(pid);
  });

  it('worker death: SIGKILL fails the running script, the host restarts the worker and keeps client sockets open', async () => {
    const peer = await echoPeer((ws) => ws.on('message', (data) => peer.received.push(data.toString())));
    try {
      const root = makeRoot({
        'p/h.js': `
          const ws = require("net/v4/websockets");
          exports.onOpen = () => console.log("open");
          exports.onMessage = (m, id) => { console.log("message " + m); ws.getClient(id).send("pong " + m); };
        `,
        'p/long.js': `require("net/v4/websockets").createWebsocket("${peer.url}", "p/h"); setTimeout(() => {}, 60000);`,
        'p/after.js': `
          const ws = require("net/v4/websockets");
          console.log("clients after restart", JSON.stringify(ws.getClients().map((c) => [c.handler, c.state])));
          ws.getClientByHandler("p/h").close();
        `,
      });
      const t = await startEngine(root);
      const running = t.engine.run('p/long.js');
      await t.waitForLine((l) => l === 'open');
      const [pid] = t.engine.workerPids;
      const exited = once(t.engine, 'workerExit');
      const restarted = once(t.engine, 'workerRestart');
      process.kill(pid!, 'SIGKILL');
      const error = await running.then(
        () => null,
        (e: Error) => e,
      );
      expect(error?.message).to.equal('ISLET_ERR_WORKER_DIED: sandbox worker 0 died (signal SIGKILL) while running a script; it is being restarted');
      expect((await exited)[0]).to.deep.include({ worker: 0, pid, signal: 'SIGKILL' });
      const [{ pid: newPid }] = (await restarted) as [{ pid: number }];
      expect(newPid).to.be.a('number').and.not.equal(pid);
      // The socket stayed open through the death; the new isolate adopted it.
      expect(peer.connections).to.have.length(1);
      peer.connections[0]!.send('after restart');
      await t.waitForLine((l) => l === 'message after restart');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(peer.received).to.deep.equal(['pong after restart']);
      await t.engine.run('p/after.js');
      expect(t.lines()).to.include('clients after restart [["p/h","open"]]');
    } finally {
      await peer.close();
    }
  });

  it('worker death: the CLI survives a SIGKILLed worker, says so, and exits 1 naming the death', async () => {
    const root = makeRoot({ 'p/wait.js': 'console.log("started");\nsetTimeout(() => console.log("never"), 60000);\n' });
    const child = spawn(process.execPath, [CLI, 'run', 'p/wait.js'], { cwd: root });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('started')) resolve();
      }),
    );
    const workerPid = Number(execFileSync('pgrep', ['-P', String(child.pid), '-f', 'bridge/main.js']).toString().trim());
    process.kill(workerPid, 'SIGKILL');
    const [code] = (await once(child, 'close')) as [number];
    expect(code).to.equal(1);
    expect(stderr).to.contain(`islet: sandbox worker 0 (pid ${workerPid}) died (signal SIGKILL); restarting it`);
    expect(stderr).to.contain('ISLET_ERR_WORKER_DIED: sandbox worker 0 died (signal SIGKILL) while running a script');
    expect(stdout).to.equal('[p] started\n');
  });
});

describe('sandbox worker death: delivery', () => {
  it('worker death: the events a dead worker had not started reach the restarted one, in order; the running one is lost', async () => {
    const root = makeRoot({
      'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
      'p/h.js': `
        exports.onMessage = (m) => {
          if (m === "busy") { const end = Date.now() + 800; while (Date.now() < end); }
          return "got " + m;
        };
      `,
    });
    const s = await serveRoot(root);
    const client = await connect(s.url('e'));
    client.ws.send('0');
    await client.receive(1);
    const [pid] = s.engine.workerPids;
    const restarted = once(s.engine, 'workerRestart');
    // The worker is busy in a handler: what follows waits in the pipe, not started.
    client.ws.send('busy');
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (let i = 1; i <= 20; i++) client.ws.send(String(i));
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.kill(pid!, 'SIGKILL');
    await restarted;
    const replies = await client.receive(21);
    expect(replies).to.deep.equal(['got 0', ...Array.from({ length: 20 }, (_, i) => `got ${i + 1}`)]);
  });

  it('worker death: megabytes of messages kept for the restarted worker come back intact and in order, the held-back client too', async () => {
    const s = await serveRoot(bulkRoot(800));
    const client = await connect(s.url('e'));
    // Several MiB through the host's replay buffer first, so it has wrapped round.
    for (let i = 0; i < 300; i++) client.ws.send(bulkMessage(i, 8 * 1024));
    expect(await client.receive(300)).to.deep.equal(bulkReplies(300, 8 * 1024));
    const [pid] = s.engine.workerPids;
    const restarted = once(s.engine, 'workerRestart');
    client.ws.send('busy');
    await new Promise((resolve) => setTimeout(resolve, 300));
    // 12 MiB waits unstarted when the worker dies: more than the replay
    // buffer's first size, and enough that the host stopped reading the client.
    for (let i = 0; i < 192; i++) client.ws.send(bulkMessage(i, 64 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.kill(pid!, 'SIGKILL');
    await restarted;
    const replies = await client.receive(492);
    expect(replies.slice(300)).to.deep.equal(bulkReplies(192, 64 * 1024));
    // And after the burst (the buffer grew, and shrinks again) messages still pass intact.
    for (let i = 0; i < 800; i++) client.ws.send(bulkMessage(i, 8 * 1024));
    expect((await client.receive(1292)).slice(492)).to.deep.equal(bulkReplies(800, 8 * 1024));
  });
});
