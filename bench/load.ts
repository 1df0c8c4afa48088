// The load generator, run as its own process so that it never shares an event
// loop with the server it measures. Closed loop: each connection keeps
// `inflight` messages outstanding and sends a new one for each reply.
// Prints one JSON line with the count, the duration and latency percentiles.
import WebSocket from 'ws';

export interface LoadSpec {
  url: string;
  /** If given, connection i goes to urls[i % urls.length] instead of `url`. */
  urls?: string[];
  connections: number;
  inflight: number;
  bytes: number;
  durationMs: number;
}

/** Opens `connections` sockets and holds them until killed (idle cost). */
export interface HoldSpec {
  url: string;
  hold: number;
}

export interface LoadResult {
  messages: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

async function run(spec: LoadSpec): Promise<LoadResult> {
  const payload = 'x'.repeat(spec.bytes);
  const sockets = await Promise.all(
    Array.from(
      { length: spec.connections },
      (_, i) =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(spec.urls?.[i % spec.urls.length] ?? spec.url, { perMessageDeflate: false });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  const latencies: number[] = [];
  let messages = 0;
  let errors = 0;
  let running = true;
  const start = process.hrtime.bigint();
  const done = new Promise<void>((resolve) => {
    let open = sockets.length;
    for (const ws of sockets) {
      const sent: bigint[] = [];
      const send = (): void => {
        sent.push(process.hrtime.bigint());
        ws.send(payload);
      };
      ws.on('message', () => {
        const at = sent.shift();
        if (at !== undefined) latencies.push(Number(process.hrtime.bigint() - at) / 1000);
        messages++;
        if (running) send();
        else if (sent.length === 0 && --open === 0) resolve();
      });
      ws.on('error', () => errors++);
      for (let i = 0; i < spec.inflight; i++) send();
    }
  });
  await new Promise((resolve) => setTimeout(resolve, spec.durationMs));
  running = false;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const counted = messages;
  await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 5000))]);
  for (const ws of sockets) ws.terminate();
  const sorted = Float64Array.from(latencies).sort();
  return { messages: counted, seconds, p50Us: percentile(sorted, 50), p99Us: percentile(sorted, 99), errors };
}

async function hold(spec: HoldSpec): Promise<never> {
  const sockets: WebSocket[] = [];
  // In batches, so the server's accept backlog is never the limit.
  for (let opened = 0; opened < spec.hold; opened += 200) {
    const batch = Math.min(200, spec.hold - opened);
    sockets.push(
      ...(await Promise.all(
        Array.from(
          { length: batch },
          () =>
            new Promise<WebSocket>((resolve, reject) => {
              const ws = new WebSocket(spec.url, { perMessageDeflate: false });
              ws.once('open', () => resolve(ws));
              ws.once('error', reject);
            }),
        ),
      )),
    );
  }
  process.stdout.write(`${JSON.stringify({ opened: sockets.length })}\n`);
  return new Promise<never>(() => {});
}

if (process.argv[2] !== undefined) {
  const spec = JSON.parse(process.argv[2]) as LoadSpec | HoldSpec;
  ('hold' in spec ? hold(spec) : run(spec)).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: Error) => {
      process.stderr.write(`load: ${error.message}\n`);
      process.exit(1);
    },
  );
}
