// Metrics an operator reads: the Prometheus text of engine.metrics() (and
// islet serve's /metrics and /healthz), parsed line by line after known
// traffic, with the tenant label on every tenant series.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { CLI, connect, makeRoot, rawRequest, serveRoot, settle, upgradeRequest } from '../helpers.js';

const ROOT = {
  'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
  'p/h.js': 'exports.onMessage = (m) => "got " + m;\n',
  'p/spin.js': 'for (;;);',
};

/** `name{labels}` → value, for every sample line. */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

describe('metrics', () => {
  it('metrics: per-tenant sessions, messages and bytes both ways, call time, heap, a stopped call, a refused upgrade; process metrics too', async () => {
    const s = await serveRoot(makeRoot(ROOT), { limits: { callTimeoutMs: 100 } });
    const a = await connect(s.url('e'));
    const b = await connect(s.url('e'));
    for (const m of ['one', 'two', 'three']) {
      a.ws.send(m);
      b.ws.send(m);
    }
    await a.receive(3);
    await b.receive(3);
    expect(await rawRequest(s.port, upgradeRequest('/websockets/v4/service/nothing'))).to.match(/^HTTP\/1\.1 404/);
    expect(await settle(s.engine.run('p/spin.js'))).to.match(/^ISLET_ERR_TIMEOUT/);
    const m = parse(await s.engine.metrics());
    expect(m.get('islet_sessions_open{tenant="p"}')).to.equal(2);
    expect(m.get('islet_messages_received_total{tenant="p"}')).to.equal(6);
    expect(m.get('islet_received_bytes_total{tenant="p"}')).to.equal(2 * (3 + 3 + 5));
    expect(m.get('islet_messages_sent_total{tenant="p"}')).to.equal(6);
    expect(m.get('islet_sent_bytes_total{tenant="p"}')).to.equal(2 * (7 + 7 + 9));
    expect(m.get('islet_upgrades_refused_total{tenant="(none)",status="404"}')).to.equal(1);
    expect(m.get('islet_limit_hits_total{tenant="p",limit="callTimeoutMs"}')).to.equal(1);
    expect(m.get('islet_tenant_call_seconds_total{tenant="p"}')).to.be.above(0.09);
    // The stopped script spun on the CPU for its budget.
    expect(m.get('islet_tenant_cpu_seconds_total{tenant="p"}')).to.be.above(0.05);
    expect(m.get('islet_tenant_heap_bytes{tenant="p"}')).to.be.above(100_000);
    expect(m.get('islet_worker_restarts_total')).to.equal(0);
    expect(m.get('process_resident_memory_bytes')).to.be.above(0);
    // Nothing a peer sent became a label.
    expect([...m.keys()].some((k) => k.includes('nothing'))).to.equal(false);
  });

  it('metrics: islet serve --metrics-port serves /metrics and /healthz on a port of its own', async function () {
    this.timeout(20_000);
    const child = spawn(process.execPath, [CLI, 'serve', makeRoot(ROOT), '--port', '0', '--metrics-port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'close');
    let stdout = '';
    try {
      const base = await new Promise<string>((resolve) =>
        child.stdout!.on('data', (d: Buffer) => {
          stdout += d.toString();
          const found = /metrics on (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(stdout);
          if (found) resolve(found[1]!);
        }),
      );
      const health = await fetch(`${base}/healthz`);
      expect([health.status, await health.text()]).to.deep.equal([200, 'ok\n']);
      const metrics = await fetch(`${base}/metrics`);
      expect(metrics.status).to.equal(200);
      expect(await metrics.text()).to.match(/^# HELP /m).and.to.contain('# TYPE islet_sessions_open gauge');
      child.kill('SIGTERM');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
  });
});
