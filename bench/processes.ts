// What the bench scenarios share: starting the servers they measure as
// processes of their own, and reading those processes' CPU and memory from /proc.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const ISLET = path.join(REPO, 'bin', 'islet.js');
export const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/** A projects root of `files` (path → text) in a new temporary folder. */
export function writeRoot(name: string, files: Record<string, string>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), `islet-bench-${name}-`));
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), text);
  }
  return root;
}

/** A server under measurement. */
export interface Server {
  child: ChildProcess;
  port: number;
  url(endpoint: string): string;
  /** Its processes: for islet, the host and its sandbox workers. */
  pids(): number[];
}

export function waitForLine(child: ChildProcess, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      const found = pattern.exec(text);
      if (found) resolve(found);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before printing ${pattern}: ${text}`)));
  });
}

/** `islet serve ROOT` on a free port, with `extra` flags. */
export async function startIslet(root: string, extra: string[] = []): Promise<Server> {
  const child = spawn(process.execPath, [ISLET, 'serve', root, '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = Number((await waitForLine(child, /listening on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
  return {
    child,
    port,
    url: (endpoint) => `ws://127.0.0.1:${port}/websockets/v4/service/${endpoint}`,
    pids: () => [child.pid!, ...workerPids(child)],
  };
}

/** A Node script of the bench that prints its port once listening. */
export async function startNodeServer(file: string, args: string[], url: (port: number, endpoint: string) => string): Promise<Server> {
  const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = Number((await waitForLine(child, /^(\d+)\n/))[1]);
  return { child, port, url: (endpoint) => url(port, endpoint), pids: () => [child.pid!] };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export function workerPids(host: ChildProcess): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(host.pid), '-f', 'bridge/main.js']).toString().trim().split('\n').map(Number);
  } catch {
    return [];
  }
}

export async function stop(server: { child: ChildProcess }): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  await exited;
}

export function cpuTicks(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // gone
    }
  }
  return ticks;
}

export function rssKiB(pids: number[]): number {
  let kib = 0;
  for (const pid of pids) {
    try {
      kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    } catch {
      // gone
    }
  }
  return kib;
}

export function runNode(file: string, argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${path.basename(file)} exited with ${code}`))));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

