// The fan-out rows: one message to many subscribers. On one host, islet's
// publish against a plain `ws` server looping over its clients; across three
// hosts, islet on Redis against socket.io 4 with @socket.io/redis-adapter on
// the same Redis, three processes each. The targets take turns (A B A B).
// For each message: the time from its publish to its arrival at the last
// subscriber; and the servers' CPU (every process of theirs, and Redis's)
// per delivery.
import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FanoutResult, FanoutSpec } from './fanout-load.js';
import { cpuTicks, freePort, type Server, startIslet, startNodeServer, stop, TICK_US, waitForLine, writeRoot } from './processes.js';

const LOAD = fileURLToPath(new URL('./fanout-load.js', import.meta.url));
const PEERS = fileURLToPath(new URL('./fanout-peers.js', import.meta.url));

export interface FanoutScale {
  subscribers: number;
  messages: number;
  rounds: number;
}

export interface FanoutFigures {
  p50Us: number;
  p99Us: number;
  cpuUsPerDelivery: number;
}

/** islet's and its peer's figures, averaged over the rounds, and each round's islet / peer ratio. */
export interface FanoutRow {
  layout: string;
  peer: string;
  islet: FanoutFigures;
  other: FanoutFigures;
  spread(key: keyof FanoutFigures): number[];
}

/** One tenant: sessions on fan-sub join topic "room" as they open; what fan-pub's session sends is published to it. */
function fanoutRoot(): string {
  return writeRoot('fanout', {
    'fan/sub.websocket': JSON.stringify({ handler: 'fan/sub', endpoint: 'fan-sub' }),
    'fan/sub.js': 'const ws = require("net/v4/websockets");\nexports.onOpen = function (id) { ws.subscribe(id, "room"); };\n',
    'fan/pub.websocket': JSON.stringify({ handler: 'fan/pub', endpoint: 'fan-pub' }),
    'fan/pub.js': 'const ws = require("net/v4/websockets");\nexports.onMessage = function (message) { ws.publish("room", message); };\n',
  });
}

interface Layout {
  servers: Server[];
  /** Processes that serve both targets (Redis): counted in both. */
  shared: number[];
  spec: Omit<FanoutSpec, 'subscribers' | 'messages' | 'bytes' | 'timeoutMs'>;
}

/** One load: the servers' CPU is read once the load's connections are open and warm, and again when it is done. */
async function measure(layout: Layout, scale: FanoutScale, messages = scale.messages): Promise<FanoutFigures> {
  const pids = (): number[] => [...layout.servers.flatMap((s) => s.pids()), ...layout.shared];
  const spec: FanoutSpec = { ...layout.spec, subscribers: scale.subscribers, messages, bytes: 64, timeoutMs: 10_000 };
  const load = spawn(process.execPath, [LOAD, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => load.once('exit', resolve));
  await waitForLine(load, /^ready\n/);
  const before = cpuTicks(pids());
  load.stdin.write('go\n');
  const [line] = await waitForLine(load, /^\{.*\}\n/m);
  const ticks = cpuTicks(pids()) - before;
  if ((await exited) !== 0) throw new Error('fanout-load failed');
  const result = JSON.parse(line) as FanoutResult;
  return { p50Us: result.p50Us, p99Us: result.p99Us, cpuUsPerDelivery: (ticks * TICK_US) / result.deliveries };
}

function mean(list: FanoutFigures[]): FanoutFigures {
  const avg = (key: keyof FanoutFigures): number => list.reduce((sum, f) => sum + f[key], 0) / list.length;
  return { p50Us: avg('p50Us'), p99Us: avg('p99Us'), cpuUsPerDelivery: avg('cpuUsPerDelivery') };
}

/** Alternates the two layouts, after a warm-up of each. */
async function compare(name: string, peer: string, islet: Layout, other: Layout, scale: FanoutScale): Promise<FanoutRow> {
  for (const layout of [islet, other]) await measure(layout, scale, Math.min(20, scale.messages));
  const runs: { islet: FanoutFigures[]; other: FanoutFigures[] } = { islet: [], other: [] };
  for (let round = 0; round < scale.rounds; round++) {
    runs.islet.push(await measure(islet, scale));
    runs.other.push(await measure(other, scale));
  }
  return {
    layout: name,
    peer,
    islet: mean(runs.islet),
    other: mean(runs.other),
    spread: (key) => runs.islet.map((figures, round) => figures[key] / runs.other[round]![key]),
  };
}

async function startRedis(): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn('/usr/bin/redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await waitForLine(child, /Ready to accept connections/);
  return { child, url: `redis://127.0.0.1:${port}` };
}

export async function fanout(scale: FanoutScale, log: (line: string) => void): Promise<FanoutRow[]> {
  const root = fanoutRoot();
  const rows: FanoutRow[] = [];
  const started: { child: ChildProcess }[] = [];
  const keep = <T extends { child: ChildProcess }>(s: T): T => (started.push(s), s);
  try {
    log(`fan-out on one host: ${scale.subscribers} subscribers, ${scale.rounds}× A B`);
    const one = keep(await startIslet(root));
    const ws = keep(await startNodeServer(PEERS, ['ws'], (port, endpoint) => `ws://127.0.0.1:${port}/${endpoint}`));
    rows.push(
      await compare('1 host', 'plain ws, a loop over its clients', { servers: [one], shared: [], spec: { protocol: 'ws', subscribe: [one.url('fan-sub')], publish: one.url('fan-pub') } }, {
        servers: [ws],
        shared: [],
        spec: { protocol: 'ws', subscribe: [ws.url('sub')], publish: ws.url('pub') },
      }, scale),
    );
    await Promise.all([stop(one), stop(ws)]);

    log(`fan-out across three hosts on Redis: ${scale.subscribers} subscribers, ${scale.rounds}× A B`);
    const redis = keep(await startRedis());
    const hosts = await Promise.all(['a', 'b', 'c'].map(async (name) => keep(await startIslet(root, ['--redis', redis.url, '--host-name', `bench-${name}`]))));
    const io = await Promise.all([0, 1, 2].map(async () => keep(await startNodeServer(PEERS, ['socketio', redis.url], (port) => `http://127.0.0.1:${port}`))));
    rows.push(
      await compare(
        '3 hosts',
        'socket.io 4 + @socket.io/redis-adapter',
        { servers: hosts, shared: [redis.child.pid!], spec: { protocol: 'ws', subscribe: hosts.map((h) => h.url('fan-sub')), publish: hosts[1]!.url('fan-pub') } },
        { servers: io, shared: [redis.child.pid!], spec: { protocol: 'socketio', subscribe: io.map((s) => s.url('')), publish: io[1]!.url('') } },
        scale,
      ),
    );
    return rows;
  } finally {
    await Promise.all(started.map(stop));
    rmSync(root, { recursive: true, force: true });
  }
}
