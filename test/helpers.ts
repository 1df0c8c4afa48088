// Real parts for tests: temporary project roots on disk, plain `ws` peers on
// 127.0.0.1, engines with real worker processes, and the real CLI.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import WebSocketClient, { type ClientOptions, WebSocketServer, type WebSocket } from 'ws';
import { type DescriptorProblem, Engine, type EngineOptions, type TenantFailure, type TenantLog } from '../engine/index.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = path.join(REPO, 'bin', 'islet.js');

const roots: string[] = [];

/** A projects root holding `files` (paths relative to it). Removed after the test run. */
export function makeRoot(files: Record<string, string>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'islet-test-'));
  roots.push(root);
  writeFiles(root, files);
  return root;
}

/**
 * For tests that push megabytes through the host and check that every message
 * came back, in order: a project with endpoint `e` that answers a message with
 * "<length>:<its first 8 characters>", and "busy" by spinning `busyMs` first.
 */
export function bulkRoot(busyMs: number): string {
  return makeRoot({
    'p/e.websocket': JSON.stringify({ handler: 'p/h', endpoint: 'e' }),
    'p/h.js': `
      exports.onMessage = (m) => {
        if (m === "busy") { const end = Date.now() + ${busyMs}; while (Date.now() < end); return "was busy"; }
        return m.length + ":" + m.slice(0, 8);
      };
    `,
  });
}

/** Bulk message number `i`, `size` characters long, and the replies of a bulkRoot project to `count` of them. */
export const bulkMessage = (i: number, size: number): string => `${String(i).padStart(8, '0')}${'x'.repeat(size - 8)}`;
export const bulkReplies = (count: number, size: number): string[] =>
  Array.from({ length: count }, (_, i) => `${size}:${String(i).padStart(8, '0')}`);

/**
 * The victim tenant of the hazard tests: project `victim`, whose endpoint
 * `victim` answers "victim <message>". Each hazard runs it beside its attacker.
 */
export const VICTIM: Record<string, string> = {
  'victim/echo.websocket': JSON.stringify({ handler: 'victim/echo', endpoint: 'victim' }),
  'victim/echo.js': 'exports.onMessage = (m) => "victim " + m;',
};

/** A process's resident memory, from /proc, in MiB. */
export function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** A complete WebSocket upgrade request for `target` (path and query); `headers`, each ending in CRLF, go before the key. */
export function upgradeRequest(target: string, headers = ''): string {
  return `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${headers}` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
}

/** A raw TCP peer that finishes the WebSocket handshake to `target` and then answers nothing (no pong, no close), as a peer that vanished. */
export function silentPeer(port: number, target: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(upgradeRequest(target)));
    socket.once('data', (d: Buffer) => (d.toString().startsWith('HTTP/1.1 101') ? resolve(socket) : reject(new Error(d.toString()))));
    socket.on('error', () => {});
  });
}

/** Raw bytes to a server on 127.0.0.1; what came back before it closed the connection, or `waitMs` passed. */
export function rawRequest(port: number, bytes: string, waitMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    let text = '';
    socket.on('data', (d) => (text += d.toString()));
    const done = (): void => resolve(text);
    socket.on('close', done);
    socket.on('error', done);
    setTimeout(() => {
      socket.destroy();
      done();
    }, waitMs);
  });
}

export function writeFiles(root: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(root, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
}

after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

export interface Peer {
  url: string;
  server: WebSocketServer;
  /** Every text message the peer received, in order. */
  received: string[];
  connections: WebSocket[];
  close(): Promise<void>;
}

/** A plain `ws` server on 127.0.0.1 that echoes text (or runs `onConnection`). */
export async function echoPeer(onConnection?: (ws: WebSocket) => void): Promise<Peer> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const peer: Peer = {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    server,
    received: [],
    connections: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const ws of peer.connections) ws.terminate();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (ws) => {
    peer.connections.push(ws);
    if (onConnection) return onConnection(ws);
    ws.on('message', (data, isBinary) => {
      if (!isBinary) peer.received.push(data.toString());
      ws.send(data, { binary: isBinary });
    });
  });
  return peer;
}

/**
 * Resolves with `check()`'s first non-undefined value; `check` runs now and
 * each time `waiters` are called. Rejects after `timeoutMs` with `describe()`.
 */
function waitUntil<T>(waiters: (() => void)[], check: () => T | undefined, timeoutMs: number, describe: () => string): Promise<T> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const value = check();
      if (value === undefined) return;
      waiters.splice(waiters.indexOf(attempt), 1);
      clearTimeout(timer);
      resolve(value);
    };
    const timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(attempt), 1);
      reject(new Error(describe()));
    }, timeoutMs);
    waiters.push(attempt);
    attempt();
  });
}

/** What a promise settled with: 'no error', or the error's message. */
export function settle(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'no error',
    (error: Error) => error.message,
  );
}

export interface TestEngine {
  engine: Engine;
  logs: TenantLog[];
  errors: TenantFailure[];
  /** Log lines of all tenants, text only, in order. */
  lines(): string[];
  /** Resolves once a log line satisfies `match`. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
}

/** A started engine over `root` (outbound clients may reach loopback) that records its tenants' logs and errors; closed after each test. */
export async function startEngine(root: string, options: EngineOptions = {}): Promise<TestEngine> {
  // Test peers live on loopback, which the engine refuses by default.
  const engine = new Engine({ outbound: { allowPrivate: true }, ...options, root });
  engines.push(engine);
  const logs: TenantLog[] = [];
  const errors: TenantFailure[] = [];
  const waiters: (() => void)[] = [];
  engine.on('log', (log) => {
    logs.push(log);
    for (const w of [...waiters]) w();
  });
  engine.on('tenantError', (e) => {
    errors.push(e);
    for (const w of [...waiters]) w();
  });
  await engine.start();
  const lines = () => logs.map((l) => l.text);
  return {
    engine,
    logs,
    errors,
    lines,
    waitForLine: (match, timeoutMs = 10_000) =>
      waitUntil(waiters, () => lines().find(match), timeoutMs, () => `no matching log line within ${timeoutMs} ms; lines: ${JSON.stringify(lines())}`),
  };
}

const engines: Engine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

/** Keeps an engine from startEngine/serveRoot open past the current test; the caller closes it. */
export function keepOpen(engine: Engine): Engine {
  engines.splice(engines.indexOf(engine), 1);
  return engine;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `islet` command; kills it after `timeoutMs`. */
export function runCli(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? REPO });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The URI the example client script connects to. */
export const EXAMPLE_URI = 'ws://127.0.0.1:8080/websockets/v4/service/my-endpoint';

/** The example project (the seed page's client and handler), with the client's URI replaced. */
export function seedProject(uri: string): Record<string, string> {
  const dir = path.join(REPO, 'examples', 'my-project');
  const client = readFileSync(path.join(dir, 'client.js'), 'utf8');
  if (!client.includes(EXAMPLE_URI)) throw new Error('examples/my-project/client.js no longer uses EXAMPLE_URI');
  return {
    'my-project/client.js': client.replace(EXAMPLE_URI, uri),
    'my-project/ws-handler.js': readFileSync(path.join(dir, 'ws-handler.js'), 'utf8'),
  };
}

export interface Served extends TestEngine {
  port: number;
  /** ws://127.0.0.1:PORT/websockets/v4/service/<endpoint> */
  url(endpoint: string): string;
  problems: DescriptorProblem[];
}

/** An engine serving `root` on 127.0.0.1 at a free port. */
export async function serveRoot(root: string, options: EngineOptions = {}): Promise<Served> {
  const problems: DescriptorProblem[] = [];
  const t = await startEngine(root, options);
  t.engine.on('descriptorError', (p) => problems.push(p));
  const server = await t.engine.listen(0, '127.0.0.1');
  const port = (server.address() as AddressInfo).port;
  return { ...t, port, problems, url: (endpoint) => `ws://127.0.0.1:${port}/websockets/v4/service/${endpoint}` };
}

export interface TestClient {
  ws: WebSocket;
  messages: string[];
  /** Resolves with the close code and reason. */
  closed: Promise<[number, string]>;
  /** Resolves once `count` messages have arrived. */
  receive(count: number, timeoutMs?: number): Promise<string[]>;
}

/** A plain `ws` client, open. Rejects with the HTTP status on a refused upgrade. */
export function connect(url: string, options: ClientOptions = {}): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocketClient(url, options);
    const messages: string[] = [];
    const waiters: (() => void)[] = [];
    ws.on('message', (data) => {
      messages.push(data.toString());
      for (const w of [...waiters]) w();
    });
    const closed = new Promise<[number, string]>((done) => ws.on('close', (code, reason) => done([code, reason.toString()])));
    ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.on('error', reject);
    ws.on('open', () =>
      resolve({
        ws,
        messages,
        closed,
        receive: (count, timeoutMs = 10_000) =>
          waitUntil(
            waiters,
            () => (messages.length >= count ? messages.slice(0, count) : undefined),
            timeoutMs,
            // The last few only: a failure must not print megabytes.
            () => `got ${messages.length} of ${count} messages, the last: ${JSON.stringify(messages.slice(-5)).slice(0, 2000)}`,
          ),
      }),
    );
  });
}

/** Resolves once `client` has received `text`. */
export async function heard(client: TestClient, text: string): Promise<void> {
  while (!client.messages.includes(text)) await client.receive(client.messages.length + 1);
}

/** Debian's Chromium, headless, with nothing of its own on the network. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}
