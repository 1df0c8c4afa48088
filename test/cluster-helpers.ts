// Real parts for the cluster tests: a redis-server on a free loopback port,
// and islet hosts as `islet serve` processes (killable with SIGKILL).
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { Redis } from 'ioredis';
import { CLI } from './helpers.js';

/** A free TCP port on 127.0.0.1, for a server started next. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once `child`'s standard output has printed a line matching `pattern`; rejects if it exits first or `timeoutMs` passes. */
function waitForOutput(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 20_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => done(new Error(`${what}: no "${pattern}" within ${timeoutMs} ms; it printed: ${seen.slice(-2000)}`)), timeoutMs);
    const onData = (data: Buffer): void => {
      seen += data.toString();
      const match = pattern.exec(seen);
      if (match !== null) done(null, match);
    };
    const onExit = (code: number | null): void => done(new Error(`${what} exited (${code}) before "${pattern}"; it printed: ${seen.slice(-2000)}`));
    const done = (error: Error | null, match?: RegExpMatchArray): void => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      if (error !== null) reject(error);
      else resolve(match!);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', onExit);
  });
}

export interface RedisServer {
  port: number;
  url: string;
  /** SIGKILL: gone at once, everything it held with it. */
  kill(): Promise<void>;
  /** A new, empty redis-server on the same port. */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT: a Redis that stops answering, with its connections open. */
  signal(signal: 'SIGSTOP' | 'SIGCONT'): void;
  /** One command, on a connection of its own (CONFIG SET, say). */
  command(...args: string[]): Promise<unknown>;
}

/** Debian's redis-server on 127.0.0.1, with nothing written to disk. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    child = spawn('/usr/bin/redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitForOutput(child, /Ready to accept connections/, 'redis-server');
  };
  const kill = async (): Promise<void> => {
    const running = child;
    child = null;
    if (running === null || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGKILL');
    await exited;
  };
  await start();
  const url = `redis://127.0.0.1:${port}`;
  const command = async (...args: string[]): Promise<unknown> => {
    const redis = new Redis(url);
    try {
      return await redis.call(args[0]!, ...args.slice(1));
    } finally {
      redis.disconnect();
    }
  };
  return { port, url, kill, restart: start, signal: (signal) => void child?.kill(signal), command };
}

export interface IsletHost {
  name: string;
  port: number;
  /** Its /metrics, as Prometheus text. */
  metrics(): Promise<string>;
  child: ChildProcess;
  url(endpoint: string): string;
  /** What it printed so far. */
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** `islet serve ROOT --redis URL` on a free port; resolves once it listens. */
export async function startHost(root: string, redis: string, name: string, extra: string[] = []): Promise<IsletHost> {
  const port = await freePort();
  const args = [CLI, 'serve', root, '--port', String(port), '--redis', redis, '--host-name', name, '--metrics-port', '0', ...extra];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let printed = '';
  child.stdout!.on('data', (d: Buffer) => (printed += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (printed += d.toString()));
  const [, metricsUrl] = await waitForOutput(child, /metrics on (http:\S+\/metrics)/, `islet host ${name}`);
  return {
    name,
    port,
    metrics: async () => (await fetch(metricsUrl!)).text(),
    child,
    url: (endpoint) => `ws://127.0.0.1:${port}/websockets/v4/service/${endpoint}`,
    output: () => printed,
    kill: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
  };
}
