// The fan-out load, in a process of its own: subscribers spread over the
// servers, one publisher, messages published one at a time. For each, the
// time from its publish to its arrival at the last subscriber. Once its
// connections are open and warm it prints "ready" and waits for a line on
// stdin (the bench reads the servers' CPU then: opening connections is not
// what is measured), then publishes and prints one JSON line.
import { io, type Socket } from 'socket.io-client';
import WebSocket from 'ws';

export interface FanoutSpec {
  /** How clients speak: plain WebSocket (islet, ws) or socket.io. */
  protocol: 'ws' | 'socketio';
  /** Subscribers go to these in turn. */
  subscribe: string[];
  publish: string;
  subscribers: number;
  messages: number;
  bytes: number;
  /** How long one message may take to reach every subscriber. */
  timeoutMs: number;
}

export interface FanoutResult {
  deliveries: number;
  p50Us: number;
  p99Us: number;
}

interface Client {
  send(text: string): void;
  onText(listener: (text: string) => void): void;
  close(): void;
}

function open(protocol: FanoutSpec['protocol'], url: string, role: 'pub' | 'sub'): Promise<Client> {
  return new Promise((resolve, reject) => {
    if (protocol === 'ws') {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.once('open', () => resolve({ send: (t) => ws.send(t), onText: (l) => ws.on('message', (d) => l(d.toString())), close: () => ws.terminate() }));
      ws.once('error', reject);
      return;
    }
    const socket: Socket = io(url, { transports: ['websocket'], query: { role }, reconnection: false, forceNew: true });
    socket.once('connect', () => resolve({ send: (t) => void socket.emit('pub', t), onText: (l) => void socket.on('m', l), close: () => void socket.disconnect() }));
    socket.once('connect_error', reject);
  });
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

async function run(spec: FanoutSpec): Promise<FanoutResult> {
  const subscribers: Client[] = [];
  // In batches, so no server's accept backlog is the limit.
  for (let opened = 0; opened < spec.subscribers; opened += 100) {
    const batch = Array.from({ length: Math.min(100, spec.subscribers - opened) }, (_, i) => open(spec.protocol, spec.subscribe[(opened + i) % spec.subscribe.length]!, 'sub'));
    subscribers.push(...(await Promise.all(batch)));
  }
  const publisher = await open(spec.protocol, spec.publish, 'pub');
  // Which message each subscriber got last: messages are numbered; warm-up ones are negative.
  let current = 0;
  let reached = 0;
  let allReached: (() => void) | null = null;
  for (const subscriber of subscribers) {
    let last = -Infinity;
    subscriber.onText((text) => {
      const n = Number(text.slice(0, 12));
      if (n <= last) return;
      last = n;
      if (n === current && ++reached === subscribers.length) allReached?.();
    });
  }
  const publish = (n: number): Promise<boolean> => {
    current = n;
    reached = 0;
    const text = String(n).padStart(12, ' ') + 'x'.repeat(Math.max(0, spec.bytes - 12));
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), spec.timeoutMs);
      allReached = () => {
        clearTimeout(timer);
        resolve(true);
      };
      publisher.send(text);
    });
  };
  // Subscriptions may take a moment to reach every server (a topic followed on Redis): warm up until one reaches all.
  let warm = false;
  for (let n = -1000; n < -900 && !warm; n++) warm = await publish(n);
  if (!warm) throw new Error('no warm-up message reached every subscriber');
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  const latencies: number[] = [];
  for (let n = 1; n <= spec.messages; n++) {
    const began = process.hrtime.bigint();
    if (!(await publish(n))) throw new Error(`message ${n} reached ${reached} of ${subscribers.length} subscribers within ${spec.timeoutMs} ms`);
    latencies.push(Number(process.hrtime.bigint() - began) / 1000);
  }
  for (const client of [...subscribers, publisher]) client.close();
  const sorted = Float64Array.from(latencies).sort();
  return { deliveries: spec.messages * subscribers.length, p50Us: percentile(sorted, 50), p99Us: percentile(sorted, 99) };
}

if (process.argv[2] !== undefined) {
  run(JSON.parse(process.argv[2]) as FanoutSpec).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: Error) => {
      process.stderr.write(`fanout-load: ${error.message}\n`);
      process.exit(1);
    },
  );
}
