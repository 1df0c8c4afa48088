// The islet command line: `islet run <script>`, `islet serve [ROOT]`, `islet --help`.
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';
import { DEFAULT_DEAD_AFTER_MS, DEFAULT_LIMITS, DEFAULT_OPTIONS, type Endpoint, Engine, type EngineOptions, IsletError } from './index.js';
import { jwtAuthorizer } from './jwt.js';
import { printer, type Printer } from './log-output.js';

/** The limits and their defaults, from the one table of defaults, wrapped for the help text. */
function limitList(): string {
  const lines: string[] = [];
  let line = '';
  for (const [name, value] of Object.entries(DEFAULT_LIMITS)) {
    const item = `${name} (${value})`;
    if (line !== '' && line.length + item.length + 2 > 60) {
      lines.push(`${line},`);
      line = '';
    }
    line = line === '' ? item : `${line}, ${item}`;
  }
  lines.push(line);
  return lines.map((l) => `                  ${l}`).join('\n');
}

const HELP = `islet: run untrusted tenant scripts that speak Eclipse Dirigible's
net/v4/websockets API, each project in its own V8 isolate.

Usage:
  islet run <script> [--root DIR] [--workers N] [--limit NAME=VALUE]... [--log-format text|json]
            [--deny-private] [--allow-host H]... [--deny-host H]...
      Runs a tenant script (JavaScript or TypeScript) in the isolate of its
      project: the first folder of its path under the projects root. Prints
      the script's console output as "[project] line" (warn and error on
      stderr), and what it writes through http/v4/response as it is. Exits 0
      once the timers and clients the script made are all done; on an
      uncaught error prints the trace, mapped to the script's own lines, and
      exits 1, as it does when the script set a status of 400 or more.

  islet serve [ROOT] [--port 8080] [--host 127.0.0.1] [--workers N]
              [--allow-origin ORIGIN]... [--limit NAME=VALUE]...
              [--allow-private] [--allow-host H]... [--deny-host H]...
              [--jwt-secret-file FILE | --jwt-public-key-file FILE]
              [--jwt-issuer ISS] [--jwt-audience AUD] [--heartbeat-ms N]
              [--shutdown-timeout-ms N] [--metrics-port PORT [--metrics-host 127.0.0.1]]
              [--no-scripts] [--redis redis://HOST:PORT [--host-name NAME] [--dead-after-ms N]]
      Serves every *.websocket descriptor under ROOT (default: the current
      folder) at ws://HOST:PORT/websockets/v4/service/<endpoint>, and the
      projects' pages at http://HOST:PORT/services/web/<project>/<path>; runs
      a project's script for GET /services/js/<project>/<path>.js (or .ts)
      and answers with what it wrote through http/v4/response. Prints each endpoint's URL; reports bad descriptors with file and
      field and serves the rest; reloads descriptors and handlers when files
      change. On SIGINT or SIGTERM drains: new sessions get 503, open ones
      close with 1001 and their onClose runs, then it exits (a second signal,
      or --shutdown-timeout-ms passing, ends it at once).

Options:
  --root DIR      projects root; handler ids "project/path/name" resolve to
                  DIR/project/path/name(.js|.ts|.mjs). Default: the current folder.
                  The script must lie inside it.
  --workers N     sandbox worker processes. Default: ${DEFAULT_OPTIONS.workers}.
  --port N        serve: port to listen on. Default: 8080.
  --host HOST     serve: address to listen on. Default: 127.0.0.1.
  --allow-origin ORIGIN
                  serve: only pages of this origin may open sessions (repeat
                  for more); others get 403. Default: any origin.
  --jwt-secret-file FILE, --jwt-public-key-file FILE
                  serve: every session needs a JSON Web Token, checked with the
                  HS256 secret in FILE (at least 32 bytes), or the RS256/ES256
                  PEM public key in FILE: its signature, exp and nbf. It comes
                  as "Authorization: Bearer <token>" or ?access_token=<token>;
                  its claims are the session's user. A descriptor with
                  "public": true needs none. Without either, every endpoint is
                  open to anyone who can reach the port.
  --jwt-issuer ISS, --jwt-audience AUD
                  serve: the token's iss and aud must be these.
  --heartbeat-ms N
                  serve: ping every session and client this often; one that has
                  not answered by the next ping is dropped. 0: off. Default: ${DEFAULT_OPTIONS.heartbeatMs}.
  --shutdown-timeout-ms N
                  serve: how long draining may take. Default: ${DEFAULT_OPTIONS.shutdownTimeoutMs}.
  --metrics-port PORT, --metrics-host HOST
                  serve: /metrics (Prometheus text: per-tenant sessions, messages,
                  bytes, call time, heap, limits hit, refused upgrades, heartbeat
                  timeouts, quarantines) and /healthz on PORT, at HOST
                  (default 127.0.0.1).
  --no-scripts    serve: do not run scripts for /services/js/ (404 there).
  --redis URL     serve: join the cluster of every islet host with this Redis
                  and the same ROOT: sessions are listed, reached and
                  published to across hosts.
  --host-name NAME
                  serve: this host's name in the cluster (each session's host).
                  Default: the machine's host name and the process id.
  --dead-after-ms N
                  serve: a host that stops leaves the others' listings within
                  N ms. Default: ${DEFAULT_DEAD_AFTER_MS}.
  --limit NAME=VALUE
                  a per-tenant limit (repeat for more), with its default:
${limitList()}
                  Example: --limit memoryMiB=128 --limit maxClients=10
  --log-format text|json
                  text (default): "[project] line", or "[project handler#id] line"
                  from a handler call; json: one JSON object a line on stdout
                  (time, level, tenant, handler, session, msg), islet's own
                  lines too.
  --deny-private  run: refuse outbound clients to loopback, private, link-local
                  (cloud metadata) and other special addresses, as serve does.
  --allow-private serve: let tenants' outbound clients reach those addresses.
  --allow-host H, --deny-host H
                  a host (example.com, *.example.com), address or CIDR range
                  that outbound clients may always / never reach; deny wins.
                  Names are checked against the address they resolve to.
  -h, --help      this text.
`;

function usage(message: string): never {
  process.stderr.write(`islet: ${message}\n\n${HELP}`);
  process.exit(2);
}

/** Options both commands take. */
const COMMON_OPTIONS = {
  root: { type: 'string' },
  workers: { type: 'string' },
  limit: { type: 'string', multiple: true },
  'allow-host': { type: 'string', multiple: true },
  'deny-host': { type: 'string', multiple: true },
  'log-format': { type: 'string', default: 'text' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Sets where the CLI prints, from --log-format; `server` for islet serve (see log-output.ts). */
function useLogFormat(format: string | undefined, server = false): void {
  if (format !== 'text' && format !== 'json') usage(`--log-format takes text or json, got "${format}"`);
  out = printer(format, server);
}

interface CommonValues {
  workers?: string;
  limit?: string[];
  'allow-host'?: string[];
  'deny-host'?: string[];
}

/** Engine options from the flags both commands take; the engine validates them. */
function engineOptions(values: CommonValues, root: string, allowPrivate: boolean): EngineOptions {
  return {
    root,
    workers: values.workers === undefined ? undefined : Number(values.workers),
    limits: parseLimits(values.limit),
    outbound: { allowPrivate, allow: values['allow-host'], deny: values['deny-host'] },
  };
}

/** `--limit NAME=VALUE` flags as engine limits; the engine validates names and ranges. */
function parseLimits(flags: string[] | undefined): Record<string, number> {
  const limits: Record<string, number> = {};
  for (const flag of flags ?? []) {
    const match = /^(\w+)=(\d+)$/.exec(flag);
    if (match === null) usage(`--limit takes NAME=VALUE with a whole number, got "${flag}"`);
    limits[match[1]!] = Number(match[2]);
  }
  return limits;
}

/** Where the CLI prints; set from --log-format before the engine starts. */
let out: Printer = printer('text');

function watch(engine: Engine): void {
  engine.on('log', (log) => out.tenant(log));
  engine.on('tenantError', ({ tenant, error }) => out.failure(tenant, error));
  engine.on('workerExit', ({ worker, pid, code, signal }) => {
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    out.islet(`islet: sandbox worker ${worker} (pid ${pid}) died (${how}); restarting it`, true);
  });
  engine.on('workerRestart', ({ worker, pid }) => out.islet(`islet: sandbox worker ${worker} restarted (pid ${pid})`, true));
  engine.on('tenantQuarantined', ({ tenant, error }) => out.failure(tenant, error));
  engine.on('hostError', ({ where, error }) => out.islet(`islet: internal error in ${where}: ${error.message}`, true));
  engine.on('cluster', ({ detail }) => out.islet(`islet: cluster: ${detail}`, true));
}

async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, 'deny-private': { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  useLogFormat(values['log-format']);
  if (positionals.length !== 1) usage('run takes exactly one script');
  // A script run on one's own machine may reach its services; a server's tenants may not.
  const engine = new Engine(engineOptions(values, values.root ?? process.cwd(), values['deny-private'] !== true));
  watch(engine);
  const stop = (): void => void engine.close().then(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let status = 0;
  try {
    await engine.start();
    // What the script writes through http/v4/response is its own output; a status of 400 or more is a failure.
    const response = await engine.run(path.resolve(positionals[0]!), { onBody: (chunk) => out.response(chunk) });
    if (response.status >= 400) status = 1;
  } catch (error) {
    out.islet(`${error instanceof IsletError || !(error instanceof Error) ? String((error as Error).message ?? error) : error.stack}`, true);
    status = 1;
  }
  await engine.close();
  return status;
}

function clusterOptions(values: { redis?: string; 'host-name'?: string; 'dead-after-ms'?: string }): EngineOptions['cluster'] {
  if (values.redis === undefined) {
    if (values['host-name'] !== undefined || values['dead-after-ms'] !== undefined) usage('--host-name and --dead-after-ms need --redis');
    return null;
  }
  return { redis: values.redis, name: values['host-name'], deadAfterMs: values['dead-after-ms'] === undefined ? undefined : Number(values['dead-after-ms']) };
}

async function serve(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'allow-origin': { type: 'string', multiple: true },
      'allow-private': { type: 'boolean' },
      'heartbeat-ms': { type: 'string' },
      'shutdown-timeout-ms': { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-host': { type: 'string', default: '127.0.0.1' },
      'jwt-secret-file': { type: 'string' },
      'jwt-public-key-file': { type: 'string' },
      'jwt-issuer': { type: 'string' },
      'jwt-audience': { type: 'string' },
      'no-scripts': { type: 'boolean' },
      redis: { type: 'string' },
      'host-name': { type: 'string' },
      'dead-after-ms': { type: 'string' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  useLogFormat(values['log-format'], true);
  if (positionals.length > 1) usage('serve takes at most one ROOT');
  const root = path.resolve(positionals[0] ?? values.root ?? process.cwd());
  const jwt = {
    secretFile: values['jwt-secret-file'],
    publicKeyFile: values['jwt-public-key-file'],
    issuer: values['jwt-issuer'],
    audience: values['jwt-audience'],
  };
  const checksTokens = jwt.secretFile !== undefined || jwt.publicKeyFile !== undefined;
  if (!checksTokens && (jwt.issuer !== undefined || jwt.audience !== undefined)) usage('--jwt-issuer and --jwt-audience need --jwt-secret-file or --jwt-public-key-file');
  const engine = new Engine({
    ...engineOptions(values, root, values['allow-private'] === true),
    allowedOrigins: values['allow-origin'] ?? null,
    authorize: checksTokens ? jwtAuthorizer(jwt) : null,
    heartbeatMs: values['heartbeat-ms'] === undefined ? undefined : Number(values['heartbeat-ms']),
    shutdownTimeoutMs: values['shutdown-timeout-ms'] === undefined ? undefined : Number(values['shutdown-timeout-ms']),
    scripts: values['no-scripts'] !== true,
    cluster: clusterOptions(values),
  });
  watch(engine);
  const host = values.host;
  // Endpoints are listed once the server is bound (its real port known), then after each reload.
  let base: string | null = null;
  let pending: Endpoint[] = [];
  const list = (endpoints: Endpoint[]): void => {
    for (const e of endpoints) out.islet(`  ws://${base}${e.path}  (${e.file} → ${e.handler})`);
    if (endpoints.length === 0) out.islet('  (no endpoints: add a *.websocket descriptor to a project)');
  };
  engine.on('descriptorError', ({ error }) => out.islet(`islet: ${error.message}`, true));
  engine.on('endpoints', (endpoints) => {
    if (base === null) {
      pending = endpoints;
      return;
    }
    out.islet('islet: reloaded; endpoints:');
    list(endpoints);
  });
  await engine.start();
  const server = await engine.listen(Number(values.port), host);
  const { port } = server.address() as AddressInfo;
  base = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  out.islet(`islet: serving ${root}`);
  out.islet(
    checksTokens
      ? 'islet: sessions need a JSON Web Token (endpoints whose descriptor says "public": true excepted)'
      : 'islet: no --jwt-secret-file or --jwt-public-key-file: every endpoint is open to anyone who can reach this port',
  );
  list(pending);
  out.islet(`islet: listening on http://${base}/ (pages at /services/web/<project>/<path>${values['no-scripts'] === true ? '' : ', scripts run at /services/js/<project>/<path>.js'})`);
  const metrics = values['metrics-port'] === undefined ? null : await serveMetrics(engine, Number(values['metrics-port']), values['metrics-host']);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
    server.once('close', () => resolve());
  });
  // Draining: a second signal ends the process at once, and so does the drain running far past its time.
  const now = (): never => process.exit(1);
  process.once('SIGINT', now);
  process.once('SIGTERM', now);
  setTimeout(now, Number(values['shutdown-timeout-ms'] ?? DEFAULT_OPTIONS.shutdownTimeoutMs) + 2000).unref();
  out.islet('islet: draining: new sessions get 503, open ones close with 1001');
  await engine.close();
  metrics?.close();
  await out.flushed(2000);
  return 0;
}

/** /metrics (Prometheus text) and /healthz (200 while the engine runs and its workers answer, else 503), on a port of their own. */
async function serveMetrics(engine: Engine, port: number, host: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const answer = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type }).end(body);
    };
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics') {
      engine.metrics().then((text) => answer(200, 'text/plain; version=0.0.4; charset=utf-8', text), () => answer(503, 'text/plain', 'not running\n'));
    } else if (path === '/healthz') {
      void engine.healthy().then((ok) => answer(ok ? 200 : 503, 'text/plain', ok ? 'ok\n' : 'unhealthy\n'));
    } else answer(404, 'text/plain', 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const { port: bound } = server.address() as AddressInfo;
  out.islet(`islet: metrics on http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics and /healthz`);
  return server;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? 2 : 0;
  }
  try {
    if (command === 'run') return await run(rest);
    if (command === 'serve') return await serve(rest);
  } catch (error) {
    if (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) usage(error.message);
    throw error;
  }
  usage(`unknown command "${command}"`);
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (error: unknown) => {
    process.stderr.write(`islet: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
