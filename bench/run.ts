// `npm run bench`: the price of the sandbox, measured against plain `ws` and
// against workerd (Cloudflare's runtime, a real peer that also isolates
// tenant code) in the same run. Every figure is a ratio taken on this machine
// now, with the targets alternated (A B C A B C) so drift shows. Loopback
// only; every phase is bounded in count and time. Prints a table and writes
// RESULTS.md and chart.svg (into --out DIR, default bench/).
//   node dist/bench/run.js [--smoke] [--out DIR]
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { fanout, type FanoutFigures, type FanoutRow } from './fanout.js';
import type { LoadResult, LoadSpec } from './load.js';
import { cpuTicks, freePort, ISLET, REPO, rssKiB, runNode, type Server, sleep, startIslet as startIsletServer, startNodeServer, stop, TICK_US, waitForLine, workerPids, writeRoot } from './processes.js';

const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));
const PLAIN = fileURLToPath(new URL('./plain-echo.js', import.meta.url));
const WORKERD_ECHO = path.join(REPO, 'bench', 'workerd-echo.js');
/** The workerd package exports the path of the platform's binary, and the compatibility date it supports. */
const workerd = createRequire(import.meta.url)('workerd') as { default: string; compatibilityDate: string };

const { values: args } = parseArgs({ options: { smoke: { type: 'boolean' }, out: { type: 'string' }, only: { type: 'string' } } });
/** --only echo,tenants,single,cold,idle,recovery,run,fanout: a subset, for working on one figure. */
const ONLY = args.only === undefined ? null : new Set(args.only.split(','));
const wanted = (name: string): boolean => ONLY === null || ONLY.has(name);
const SMOKE = args.smoke === true;
const OUT = path.resolve(args.out ?? path.join(REPO, 'bench'));
const SCALE = SMOKE
  ? { loadMs: 300, rounds: 1, tenants: 5, sessions: 50, recoveries: 1, runs: 1, fanout: { subscribers: 30, messages: 5, rounds: 1 } }
  : // workerd takes two file descriptors per connection: 8,000 sessions stay within a 20,000 limit.
    { loadMs: 2500, rounds: 4, tenants: 300, sessions: 8_000, recoveries: 5, runs: 5, fanout: { subscribers: 1000, messages: 200, rounds: 3 } };

// ---- processes and their cost -------------------------------------------------

type TargetName = 'islet' | 'ws' | 'workerd';
/** The order targets take turns in, each round. */
const TARGETS: TargetName[] = ['ws', 'islet', 'workerd'];

interface Target extends Server {
  name: TargetName;
}

async function startPlain(): Promise<Target> {
  return { name: 'ws', ...(await startNodeServer(PLAIN, [], (port) => `ws://127.0.0.1:${port}/`)) };
}

async function startIslet(root: string): Promise<Target> {
  return { name: 'islet', ...(await startIsletServer(root)) };
}

/** Resolves once something accepts connections on the port (workerd prints nothing when it is up). */
async function listening(port: number, child: ChildProcess): Promise<void> {
  for (let waited = 0; waited < 10_000; waited += 50) {
    if (child.exitCode !== null) throw new Error(`workerd exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    await sleep(50);
  }
  throw new Error(`workerd did not listen on ${port} within 10 s`);
}

/** workerd serving bench/workerd-echo.js, one worker, on a loopback port. */
async function startWorkerd(): Promise<Target> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'islet-bench-workerd-'));
  copyFileSync(WORKERD_ECHO, path.join(dir, 'echo.js'));
  const port = await freePort();
  writeFileSync(
    path.join(dir, 'config.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "echo", worker = (modules = [(name = "echo", esModule = embed "echo.js")], compatibilityDate = "${workerd.compatibilityDate}"))],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "echo")],
);
`,
  );
  // Node raises its open-file limit to the hard limit by itself; workerd does not, and idle sessions need it.
  const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', workerd.default, 'serve', path.join(dir, 'config.capnp')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  await listening(port, child);
  return { name: 'workerd', child, port, url: () => `ws://127.0.0.1:${port}/`, pids: () => [child.pid!] };
}

function start(name: TargetName, root: string): Promise<Target> {
  return name === 'islet' ? startIslet(root) : name === 'ws' ? startPlain() : startWorkerd();
}

// ---- scenarios ----------------------------------------------------------------

interface EchoFigures {
  rate: number;
  p50Us: number;
  p99Us: number;
  cpuUsPerMessage: number;
  peakRssMiB: number;
}

/** One load run against one target, with its CPU and peak RSS over all its processes. */
/** A load's shape; `endpoints` spreads its connections over those endpoints (plain ws has one). */
type EchoSpec = Omit<LoadSpec, 'url' | 'urls'> & { endpoints?: string[] };

async function echoRun(target: Target, spec: EchoSpec): Promise<EchoFigures> {
  const pids = target.pids();
  const before = cpuTicks(pids);
  let peak = rssKiB(pids);
  const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(pids))), 50);
  const { endpoints, ...shape } = spec;
  const load: LoadSpec = { ...shape, url: target.url('echo'), urls: endpoints?.map((endpoint) => target.url(endpoint)) };
  let result: LoadResult;
  try {
    result = JSON.parse(await runNode(LOAD, [JSON.stringify(load)])) as LoadResult;
  } finally {
    clearInterval(sampler);
  }
  const ticks = cpuTicks(pids) - before;
  if (result.errors > 0 || result.messages === 0) throw new Error(`${target.name}: ${result.errors} errors, ${result.messages} messages`);
  return {
    rate: result.messages / result.seconds,
    p50Us: result.p50Us,
    p99Us: result.p99Us,
    cpuUsPerMessage: (ticks * TICK_US) / result.messages,
    peakRssMiB: peak / 1024,
  };
}

function mean(list: EchoFigures[]): EchoFigures {
  const avg = (key: keyof EchoFigures): number => list.reduce((sum, f) => sum + f[key], 0) / list.length;
  return {
    rate: avg('rate'),
    p50Us: avg('p50Us'),
    p99Us: avg('p99Us'),
    cpuUsPerMessage: avg('cpuUsPerMessage'),
    peakRssMiB: Math.max(...list.map((f) => f.peakRssMiB)),
  };
}

function makeRoot(tenants: number): string {
  const files: Record<string, string> = {
    'echo/echo.websocket': JSON.stringify({ handler: 'echo/echo', endpoint: 'echo' }),
    'echo/echo.js': 'exports.onMessage = function (message) { return message; };\n',
  };
  for (let i = 0; i < tenants; i++) {
    files[`t${i}/e.websocket`] = JSON.stringify({ handler: `t${i}/h`, endpoint: `t${i}` });
    files[`t${i}/h.js`] = `exports.onMessage = function (message) { return "t${i} " + message; };\n`;
  }
  return writeRoot('echo', files);
}

type PerTarget<T> = Record<TargetName, T>;

interface EchoResult {
  figures: PerTarget<EchoFigures>;
  /** Each round's islet / `peer` ratio of one figure: how far the machine drifted. */
  spread(key: keyof EchoFigures, peer: 'ws' | 'workerd'): number[];
}

/** Alternates plain ws, islet and workerd (A B C A B C) under the same load; fresh servers per load. */
async function echo(root: string, spec: EchoSpec): Promise<EchoResult> {
  const targets = await Promise.all(TARGETS.map((name) => start(name, root)));
  try {
    // Warm each (JIT, the tenant's isolate and bundle) outside the measurement.
    for (const target of targets) await echoRun(target, { ...spec, durationMs: Math.min(500, spec.durationMs) });
    const runs: PerTarget<EchoFigures[]> = { ws: [], islet: [], workerd: [] };
    for (let round = 0; round < SCALE.rounds; round++) {
      for (const target of targets) runs[target.name].push(await echoRun(target, spec));
    }
    return {
      figures: { ws: mean(runs.ws), islet: mean(runs.islet), workerd: mean(runs.workerd) },
      spread: (key, peer) => runs.islet.map((figures, round) => figures[key] / runs[peer][round]![key]),
    };
  } finally {
    await Promise.all(targets.map(stop));
  }
}

function firstReply(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('open', () => ws.send('x'));
    ws.once('message', () => {
      resolve(Number(process.hrtime.bigint() - start) / 1e6);
      ws.close();
    });
    ws.once('error', reject);
  });
}

function percentiles(list: number[]): { p50: number; p99: number } {
  const sorted = [...list].sort((a, b) => a - b);
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
  return { p50: at(50), p99: at(99) };
}

/** Connect + first message + reply per tenant: cold (bundle cache empty), cold (bundle cached), warm. */
async function coldStart(root: string): Promise<{ empty: number[]; cached: number[]; warm: number[]; idleTenantKiB: number }> {
  const islet = await startIslet(root);
  try {
    const times = async (): Promise<number[]> => {
      const list: number[] = [];
      for (let i = 0; i < SCALE.tenants; i++) list.push(await firstReply(islet.url(`t${i}`)));
      return list;
    };
    await firstReply(islet.url('echo')); // the worker and the echo tenant are up
    const before = rssKiB(islet.pids());
    const empty = await times();
    const idleTenantKiB = (rssKiB(islet.pids()) - before) / SCALE.tenants;
    const warm = await times();
    // Kill the worker: its isolates are gone, the host's bundle cache is not.
    const [worker] = workerPids(islet.child);
    process.kill(worker!, 'SIGKILL');
    while (workerPids(islet.child).length === 0 || workerPids(islet.child)[0] === worker) await sleep(20);
    await firstReply(islet.url('echo'));
    const cached = await times();
    return { empty, cached, warm, idleTenantKiB };
  } finally {
    await stop(islet);
  }
}

/**
 * RSS once it has stopped moving (two samples 250 ms apart within 1%, at
 * most 5 s): what idle sockets cost, not the garbage of opening them that a
 * collector has yet to return.
 */
async function settledRssKiB(pids: number[]): Promise<number> {
  let last = rssKiB(pids);
  for (let waited = 0; waited < 5000; waited += 250) {
    await sleep(250);
    const now = rssKiB(pids);
    if (Math.abs(now - last) <= last * 0.01) return now;
    last = now;
  }
  return last;
}

/** RSS per open idle session, islet against plain ws and workerd. */
async function idleSessions(root: string): Promise<PerTarget<number>> {
  const perSession = async (target: Target): Promise<number> => {
    if (target.name === 'islet') await firstReply(target.url('echo'));
    await sleep(200);
    const before = rssKiB(target.pids());
    const holder = spawn(process.execPath, [LOAD, JSON.stringify({ url: target.url('echo'), hold: SCALE.sessions })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await waitForLine(holder, /"opened":(\d+)/);
    const after = await settledRssKiB(target.pids());
    holder.kill('SIGKILL');
    return (after - before) / SCALE.sessions;
  };
  const targets = await Promise.all(TARGETS.map((name) => start(name, root)));
  try {
    const kib = { ws: 0, islet: 0, workerd: 0 };
    for (const target of targets) kib[target.name] = await perSession(target);
    return kib;
  } finally {
    await Promise.all(targets.map(stop));
  }
}

/** From a worker's SIGKILL to the reply to a message sent right after it. */
async function recovery(root: string): Promise<number[]> {
  const islet = await startIslet(root);
  try {
    const ws = new WebSocket(islet.url('echo'), { perMessageDeflate: false });
    await new Promise((resolve) => ws.once('open', resolve));
    const roundTrip = (): Promise<void> =>
      new Promise((resolve) => {
        ws.once('message', () => resolve());
        ws.send('x');
      });
    await roundTrip();
    const list: number[] = [];
    for (let i = 0; i < SCALE.recoveries; i++) {
      const [worker] = workerPids(islet.child);
      const start = process.hrtime.bigint();
      process.kill(worker!, 'SIGKILL');
      await roundTrip();
      list.push(Number(process.hrtime.bigint() - start) / 1e6);
      await sleep(100);
    }
    ws.close();
    return list;
  } finally {
    await stop(islet);
  }
}

/** `islet run` of the seed client against `node` running the same client on plain ws. */
async function runScript(): Promise<{ islet: number[]; node: number[] }> {
  const ws = await startPlain();
  const root = mkdtempSync(path.join(os.tmpdir(), 'islet-bench-run-'));
  try {
    const uri = `ws://127.0.0.1:${ws.port}/`;
    const seed = (file: string): string => readFileSync(path.join(REPO, 'examples/my-project', file), 'utf8');
    mkdirSync(path.join(root, 'my-project'));
    writeFileSync(path.join(root, 'my-project/client.js'), seed('client.js').replace(/ws:\/\/[^"]+/, uri));
    writeFileSync(path.join(root, 'my-project/ws-handler.js'), seed('ws-handler.js'));
    writeFileSync(
      path.join(root, 'plain.cjs'),
      `const WebSocket = require(${JSON.stringify(path.join(REPO, 'node_modules/ws'))});
console.log("Connect to: ${uri}");
const ws = new WebSocket("${uri}");
ws.on("open", () => { console.log("Connection openned."); ws.send("hello"); ws.close(); });
ws.on("message", (m) => console.log("Message received: " + m));
ws.on("close", () => console.warn("Connection closed."));
`,
    );
    const time = (argv: string[]): number => {
      const start = process.hrtime.bigint();
      execFileSync(process.execPath, argv, { cwd: root, stdio: 'ignore' });
      return Number(process.hrtime.bigint() - start) / 1e6;
    };
    const result = { islet: [] as number[], node: [] as number[] };
    for (let i = 0; i < SCALE.runs; i++) {
      result.islet.push(time([ISLET, 'run', 'my-project/client.js']));
      result.node.push(time([path.join(root, 'plain.cjs')]));
    }
    return result;
  } finally {
    rmSync(root, { recursive: true, force: true });
    await stop(ws);
  }
}

// ---- report -------------------------------------------------------------------

/** A figure's value for islet and its peers (null: not measured there), and the rounds' ratios. */
interface Measured {
  figure: string;
  unit: string;
  digits?: number;
  islet: number;
  ws?: number | null;
  workerd?: number | null;
  /** Per-round islet / ws and islet / workerd ratios, when there were rounds. */
  spread?: { ws: number[]; workerd: number[] };
  /** The project's target for this figure, and whether islet meets it. */
  target?: string;
  ok?: (ratioToWs: number, islet: number) => boolean;
  /** Throughput: more is better. Time, CPU and memory: less is. */
  moreIsBetter?: boolean;
}

interface Row {
  figure: string;
  values: [islet: string, ws: string, workerd: string];
  vsWs: string;
  vsWorkerd: string;
  target: string;
  met: boolean | null;
  /** Whether islet beats workerd on this figure; null where workerd was not measured. */
  ahead: boolean | null;
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

function ratioText(islet: number, peer: number | null | undefined, spread: number[] | undefined): string {
  if (peer === null || peer === undefined) return '';
  // A smoke run's few deliveries can take under one clock tick of CPU: no ratio to give.
  if (peer === 0) return 'n/a';
  const range = spread !== undefined && spread.length > 1 ? ` (${fmt(Math.min(...spread), 2)}–${fmt(Math.max(...spread), 2)})` : '';
  return `${fmt(islet / peer, 2)}×${range}`;
}

function row(m: Measured): Row {
  const value = (v: number | null | undefined): string => (v === null || v === undefined ? '' : `${fmt(v, m.digits ?? 0)} ${m.unit}`);
  const hasWorkerd = m.workerd !== null && m.workerd !== undefined;
  return {
    figure: m.figure,
    values: [value(m.islet), value(m.ws), value(m.workerd)],
    vsWs: ratioText(m.islet, m.ws, m.spread?.ws),
    vsWorkerd: ratioText(m.islet, m.workerd, m.spread?.workerd),
    target: m.target ?? '',
    met: m.ok === undefined ? null : m.ok(m.ws === null || m.ws === undefined ? NaN : m.islet / m.ws, m.islet),
    ahead: hasWorkerd ? (m.moreIsBetter === true ? m.islet > m.workerd! : m.islet < m.workerd!) : null,
  };
}

function versions(): string {
  const version = (name: string): string => (JSON.parse(readFileSync(path.join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.arch();
  return [
    `- Machine: ${cpu}, ${os.cpus().length} cores, ${fmt(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}`,
    `- Node ${process.version}; ws ${version('ws')}, isolated-vm ${version('isolated-vm')}, esbuild ${version('esbuild')}, workerd ${version('workerd')}`,
  ].join('\n');
}

function table(rows: Row[]): string {
  const lines = [
    '| figure | islet | plain ws | workerd | islet / ws (range over rounds) | islet / workerd (range) | target | met | ahead of workerd |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const yesNo = (b: boolean | null): string => (b === null ? '' : b ? 'yes' : '**no**');
  for (const r of rows) {
    lines.push(`| ${r.figure} | ${r.values.join(' | ')} | ${r.vsWs} | ${r.vsWorkerd} | ${r.target} | ${yesNo(r.met)} | ${yesNo(r.ahead)} |`);
  }
  return lines.join('\n');
}

const COLORS: PerTarget<string> = { ws: '#999', islet: '#2a7', workerd: '#e80' };

function chart(echoes: { label: string; figures: PerTarget<EchoFigures> }[]): string {
  const barArea = 260;
  const groupWidth = 160;
  const barWidth = 42;
  const panel = (title: string, x0: number, key: 'rate' | 'p99Us', unit: string): string => {
    const max = Math.max(...echoes.flatMap((e) => TARGETS.map((name) => e.figures[name][key])));
    let out = `<text x="${x0}" y="20" font-weight="bold">${title}</text>`;
    echoes.forEach((e, i) => {
      const x = x0 + i * groupWidth;
      TARGETS.forEach((name, j) => {
        const value = e.figures[name][key];
        const h = (value / max) * barArea;
        const bx = x + j * (barWidth + 4);
        out += `<rect x="${bx}" y="${40 + barArea - h}" width="${barWidth}" height="${h}" fill="${COLORS[name]}"/>`;
        out += `<text x="${bx + barWidth / 2}" y="${35 + barArea - h}" text-anchor="middle" font-size="10">${fmt(value)}</text>`;
        out += `<text x="${bx + barWidth / 2}" y="${55 + barArea}" text-anchor="middle" font-size="11">${name}</text>`;
      });
      out += `<text x="${x + (3 * barWidth) / 2}" y="${72 + barArea}" text-anchor="middle" font-size="11">${e.label}</text>`;
    });
    return out + `<text x="${x0}" y="${92 + barArea}" font-size="11">${unit}</text>`;
  };
  const width = 2 * (10 + echoes.length * groupWidth) + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${barArea + 110}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${panel('Echo throughput', 10, 'rate', 'messages per second (higher is better)')}
${panel('Echo p99 latency', 30 + echoes.length * groupWidth, 'p99Us', 'microseconds (lower is better)')}
</svg>
`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const root = makeRoot(SCALE.tenants);
  const rows: Row[] = [];
  const add = (m: Measured): void => void rows.push(row(m));
  /** The figures of one echo load, for every target, with the rounds' ratios. */
  const echoed = (result: EchoResult, key: keyof EchoFigures): Pick<Measured, 'islet' | 'ws' | 'workerd' | 'spread'> => ({
    islet: result.figures.islet[key],
    ws: result.figures.ws[key],
    workerd: result.figures.workerd[key],
    spread: { ws: result.spread(key, 'ws'), workerd: result.spread(key, 'workerd') },
  });
  try {
    const echoes: { label: string; figures: PerTarget<EchoFigures> }[] = [];
    for (const bytes of wanted('echo') ? [64, 4096] : []) {
      const label = bytes === 64 ? '64 B' : '4 KiB';
      log(`echo ${label}: 8 connections × 16 in flight, ${SCALE.rounds}× A B C`);
      const result = await echo(root, { connections: 8, inflight: 16, bytes, durationMs: SCALE.loadMs });
      echoes.push({ label, figures: result.figures });
      add({ figure: `echo throughput, ${label}`, unit: 'msg/s', ...echoed(result, 'rate'), target: '≥ 0.85×', ok: (r) => r >= 0.85, moreIsBetter: true });
      add({ figure: `server CPU per message, ${label}`, unit: 'µs', digits: 1, ...echoed(result, 'cpuUsPerMessage'), target: '≤ 1.4×', ok: (r) => r <= 1.4 });
      add({ figure: `p50 latency, ${label}`, unit: 'µs', ...echoed(result, 'p50Us') });
      add({ figure: `p99 latency, ${label}`, unit: 'µs', ...echoed(result, 'p99Us'), target: '≤ 1.5×', ok: (r) => r <= 1.5 });
      const rss = { ...echoed(result, 'peakRssMiB'), spread: undefined };
      if (bytes === 4096) add({ figure: `peak RSS, ${label}`, unit: 'MiB', digits: 1, ...rss, target: '≤ 2×', ok: (r) => r <= 2 });
      else add({ figure: `peak RSS, ${label}`, unit: 'MiB', digits: 1, ...rss });
    }
    if (wanted('tenants')) {
      // Connections on tenants of their own, all on one worker: a call per tenant per turn.
      // The peers serve them all from their one echo server (worker).
      const endpoints = Array.from({ length: Math.min(8, SCALE.tenants) }, (_, i) => `t${i}`);
      const n = endpoints.length;
      log(`echo 64 B over ${n} tenants: 8 connections × 16 in flight, ${SCALE.rounds}× A B C`);
      const spread = await echo(root, { connections: 8, inflight: 16, bytes: 64, durationMs: SCALE.loadMs, endpoints });
      add({ figure: `echo throughput, 64 B, ${n} tenants (connections spread over them)`, unit: 'msg/s', ...echoed(spread, 'rate'), moreIsBetter: true });
      add({ figure: `server CPU per message, 64 B, ${n} tenants`, unit: 'µs', digits: 1, ...echoed(spread, 'cpuUsPerMessage') });
    }
    if (wanted('single')) {
      log(`one connection, one message in flight, 64 B, ${SCALE.rounds}× A B C`);
      const single = await echo(root, { connections: 1, inflight: 1, bytes: 64, durationMs: SCALE.loadMs });
      add({ figure: 'p50 latency, 1 connection × 1 in flight', unit: 'µs', ...echoed(single, 'p50Us'), target: '≤ 2×', ok: (r) => r <= 2 });
    }
    if (wanted('cold')) {
      log(`tenant cold start over ${SCALE.tenants} tenants`);
      const cold = await coldStart(root);
      const empty = percentiles(cold.empty);
      const cached = percentiles(cold.cached);
      const warm = percentiles(cold.warm);
      // The plain ws column here is islet's own warm first reply: what a cold start adds to it.
      const ms = { unit: 'ms', digits: 2 };
      add({ figure: 'tenant cold start p50 (bundle cached): connect, first message, reply', ...ms, islet: cached.p50, ws: warm.p50, target: '≤ 5 ms', ok: (_r, v) => v <= 5 });
      add({ figure: 'tenant cold start p99 (bundle cached)', ...ms, islet: cached.p99, ws: warm.p99 });
      add({ figure: 'tenant cold start p50 (empty bundle cache)', ...ms, islet: empty.p50, ws: warm.p50 });
      add({ figure: 'tenant cold start p99 (empty bundle cache)', ...ms, islet: empty.p99, ws: warm.p99 });
      add({ figure: `idle tenant (RSS over ${SCALE.tenants} tenants)`, unit: 'MiB', digits: 2, islet: cold.idleTenantKiB / 1024, target: '≤ 1.5 MiB', ok: (_r, v) => v <= 1.5 });
    }
    if (wanted('idle')) {
      log(`idle sessions: ${SCALE.sessions}`);
      const idle = await idleSessions(root);
      add({ figure: `idle session (RSS over ${fmt(SCALE.sessions)} sessions)`, unit: 'KiB', digits: 1, ...idle, target: '≤ 1.3×', ok: (r) => r <= 1.3 });
    }
    if (wanted('recovery')) {
      log('recovery from a killed worker');
      const recoveries = percentiles(await recovery(root));
      add({ figure: `recovery: worker SIGKILL → next reply (p50 of ${SCALE.recoveries})`, unit: 'ms', digits: 1, islet: recoveries.p50 });
    }
    if (wanted('run')) {
      log('islet run of the seed client');
      const runs = await runScript();
      add({ figure: `islet run of the seed client (wall, p50 of ${SCALE.runs}; plain: node + ws)`, unit: 'ms', islet: percentiles(runs.islet).p50, ws: percentiles(runs.node).p50 });
    }

    const fanouts = wanted('fanout') ? await fanout(SCALE.fanout, log) : [];
    const fanText = fanoutTable(fanouts);

    const command = `node dist/bench/run.js${SMOKE ? ' --smoke' : ''}  (npm run bench${SMOKE ? ' -- --smoke' : ''})`;
    const text = table(rows);
    process.stdout.write(`\n${text}\n\n${fanText}\n\n${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    if (ONLY !== null) return; // a partial run is for working on a figure, not a result
    mkdirSync(OUT, { recursive: true });
    writeFileSync(
      path.join(OUT, 'RESULTS.md'),
      `# islet benchmark results

${SMOKE ? '**Smoke run: durations and counts cut to seconds; not a measurement.**\n\n' : ''}Measured ${new Date().toISOString().slice(0, 10)} with \`${command}\`, in ${((Date.now() - started) / 1000).toFixed(0)} s.

${versions()}
- Load: a separate Node process with \`ws\` clients on 127.0.0.1, closed loop (each connection keeps its
  messages in flight and sends one per reply); ${fmt(SCALE.loadMs / 1000, 1)} s per run, plain ws, islet and
  workerd alternated ${SCALE.rounds}× (A B C) after a warm-up, figures averaged; in brackets the lowest and highest
  ratio of single rounds, which shows how much the machine drifted. Server CPU and RSS are summed over the
  host and its sandbox workers (islet) or the one process (plain ws, workerd), from /proc.
- islet: \`islet serve\` with an echo endpoint whose handler returns the message; plain ws: a \`ws\` echo server;
  workerd: one Worker that echoes through a \`WebSocketPair\` (\`bench/workerd-echo.js\`). The tenants rows spread the
  connections over islet tenants whose handlers return the message behind their tenant's name, all on one worker;
  the peers serve them from their one echo server.

${text}

![throughput and p99](chart.svg)

## Fan-out

One message of 64 B published to ${fmt(SCALE.fanout.subscribers)} subscribers, ${fmt(SCALE.fanout.messages)} messages one after another
(the next once the last subscriber has the one before), islet and its peer alternated ${SCALE.fanout.rounds}× after a warm-up.
Latency: from the publisher's send to the arrival at the last subscriber, in the load process. CPU: every server
process (islet's hosts and their workers; the peer's processes; and Redis, which both use across hosts) over the
deliveries. On one host islet's tenant publishes to a topic its sessions joined as they opened; plain ws loops over
its clients, sending to each. Across three hosts the subscribers are spread evenly and the publisher is on the second
host: islet's hosts share one Redis (\`--redis\`); socket.io 4 runs three processes with @socket.io/redis-adapter on
the same Redis, its clients on the websocket transport.

${fanText}
`,
    );
    writeFileSync(path.join(OUT, 'chart.svg'), chart(echoes));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function fanoutTable(rows: FanoutRow[]): string {
  if (rows.length === 0) return '';
  const lines = ['| figure | islet | peer | islet / peer (range over rounds) | target | met |', '| --- | --- | --- | --- | --- | --- |'];
  for (const r of rows) {
    // One host: at or below plain ws's CPU; across hosts: ahead of socket.io on latency and CPU.
    const target = r.layout === '1 host' ? { cpuUsPerDelivery: '≤ 1×' } : { p50Us: '< 1×', p99Us: '< 1×', cpuUsPerDelivery: '< 1×' };
    const figures: [keyof FanoutFigures, string, string, number][] = [
      ['p50Us', 'last delivery p50', 'µs', 0],
      ['p99Us', 'last delivery p99', 'µs', 0],
      ['cpuUsPerDelivery', 'server CPU per delivery', 'µs', 2],
    ];
    for (const [key, name, unit, digits] of figures) {
      const goal = (target as Partial<Record<keyof FanoutFigures, string>>)[key];
      const ratio = r.islet[key] / r.other[key];
      const met = goal === undefined || !Number.isFinite(ratio) ? '' : (goal === '≤ 1×' ? ratio <= 1 : ratio < 1) ? 'yes' : '**no**';
      lines.push(`| ${name}, ${r.layout} (peer: ${r.peer}) | ${fmt(r.islet[key], digits)} ${unit} | ${fmt(r.other[key], digits)} ${unit} | ${ratioText(r.islet[key], r.other[key], r.spread(key))} | ${goal ?? ''} | ${met} |`);
    }
  }
  return lines.join('\n');
}

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`bench: ${error.stack}\n`);
    process.exit(1);
  },
);
