// HTTP: the upgrades under /websockets/v4/service/ and the refusals a client
// gets there (unknown endpoint, quarantine, session limit, origin), scripts
// run over HTTP (scripts-http.ts), the projects' static pages, and the
// servers `listen()` makes.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { asIsletError, type IsletError } from '../bridge/errors.js';
import { decide } from './authorize.js';
import { type Emit, failure as tenantFailure, guarded, type Report } from './events.js';
import type { Handlers } from './handlers.js';
import { type Metrics, NO_TENANT } from './metrics.js';
import type { ResolvedOptions } from './options.js';
import { type Endpoint, SERVICE_PREFIX } from './projects.js';
import type { Quarantine } from './quarantine.js';
import type { RunHost } from './runs.js';
import { ServedScripts } from './scripts-http.js';
import type { Served } from './served.js';
import { answer, refuseUpgrade, requestPath, serveStatic } from './server.js';
import type { Sockets } from './sockets.js';
import type { Workers } from './workers.js';

/** One shared listener for errors that need no handling (none made per socket). */
const ignore = (): void => {};

export interface RoutesHost {
  options: ResolvedOptions;
  served: Served;
  handlers: Handlers;
  sockets: Sockets;
  workers: Workers;
  quarantine: Quarantine;
  metrics: Metrics;
  runHost: RunHost;
  emit: Emit;
  report: Report;
  running(): boolean;
}

export class Routes {
  private wss: WebSocketServer | null = null;
  private readonly servers = new Set<http.Server>();
  private readonly scripts: ServedScripts;

  constructor(private readonly host: RoutesHost) {
    this.scripts = new ServedScripts(host);
  }

  /** Upgrades of an existing server under /websockets/v4/service/ are islet's; the rest is the server's own. */
  attach(server: http.Server): void {
    const report = this.host.report;
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      guarded(report, 'upgrade', () => this.handleUpgrade(req, socket, head), () => socket.destroy());
    });
  }

  /** A new HTTP server with the endpoints and the projects' pages; any other path gets 404. */
  async listen(port: number, hostname: string): Promise<http.Server> {
    const report = this.host.report;
    const timeoutMs = this.host.options.upgradeTimeoutMs;
    await this.host.served.bundled();
    const server = http.createServer({
      // A peer that never finishes its request (or upgrade) is dropped.
      headersTimeout: timeoutMs,
      requestTimeout: timeoutMs,
      connectionsCheckingInterval: Math.min(1000, timeoutMs),
    }, (req, res) => {
      guarded(report, 'request', () => {
        if (requestPath(req) === null) answer(res, 400, 'bad request target');
        else if (!this.handleRequest(req, res)) answer(res, 404, 'not found');
      }, () => answer(res, 500, 'internal error'));
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      guarded(report, 'upgrade', () => {
        if (requestPath(req) === null) refuseUpgrade(socket, 400, 'bad request target');
        else if (!this.handleUpgrade(req, socket, head)) refuseUpgrade(socket, 404, 'no WebSocket service at this path');
      }, () => socket.destroy());
    });
    this.servers.add(server);
    server.once('close', () => this.servers.delete(server));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, hostname, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server;
  }

  /** Closes the servers `listen()` made, and their idle and pending HTTP connections (upgraded sockets are the registry's). */
  async close(): Promise<void> {
    await Promise.all(
      [...this.servers].map(
        (server) =>
          new Promise((resolve) => {
            server.close(resolve);
            server.closeAllConnections();
          }),
      ),
    );
  }

  /** Takes an upgrade under /websockets/v4/service/; returns false for any other path. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const pathname = requestPath(req);
    if (pathname === null || !pathname.startsWith(SERVICE_PREFIX)) return false;
    socket.on('error', ignore); // a peer that resets mid-upgrade is its own loss
    if (!this.host.running()) {
      this.refuse(socket, NO_TENANT, 503, 'islet is not running');
      return true;
    }
    let name: string;
    try {
      name = decodeURIComponent(pathname.slice(SERVICE_PREFIX.length));
    } catch {
      name = '';
    }
    const endpoint = this.host.served.get(name);
    if (endpoint === undefined) {
      // Dirigible accepted unknown endpoints silently; a client deserves to know.
      this.refuse(socket, NO_TENANT, 404, `no endpoint "${name.slice(0, 200)}"`);
      return true;
    }
    const refusal = this.refusal(endpoint, req);
    if (refusal !== null) {
      this.refuse(socket, endpoint.project, refusal.status, refusal.reason);
      return true;
    }
    void this.acceptSession(endpoint, req, socket, head);
    return true;
  }

  /** Runs scripts under /services/js/ and serves the projects' static pages; returns false for any other path. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    let served = true;
    guarded(this.host.report, 'request', () => {
      const pathname = requestPath(req);
      if (pathname !== null && this.scripts.handle(req, res, pathname)) return;
      const pages = this.host.served;
      pages.load();
      served = serveStatic(this.host.options.root, (requested, real) => pages.isServerCode(requested, real), req, res);
    }, () => answer(res, 500, 'internal error'));
    return served;
  }

  /** Refuses an upgrade, counted for its tenant (NO_TENANT: it named no endpoint). */
  private refuse(socket: Duplex, tenant: string, status: number, reason: string): void {
    const refused = this.host.metrics.of(tenant).refused;
    refused.set(status, (refused.get(status) ?? 0) + 1);
    refuseUpgrade(socket, status, reason);
  }

  /** Why an upgrade to this endpoint is refused now, or null. */
  private refusal(endpoint: Endpoint, req: IncomingMessage): { status: number; reason: string } | null {
    const quarantined: IsletError | null = this.host.quarantine.refusal(endpoint.project);
    if (quarantined !== null) return { status: 503, reason: quarantined.message };
    const { limits, allowedOrigins } = this.host.options;
    const sessions = this.host.sockets.sessionsOf(endpoint.project);
    if (sessions >= limits.maxSessions) {
      return { status: 503, reason: `ISLET_ERR_LIMIT_SESSIONS: tenant "${endpoint.project}" already has ${sessions} sessions (limit maxSessions)` };
    }
    if (allowedOrigins !== null && !allowedOrigins.includes(req.headers.origin ?? '')) {
      // Cross-site WebSocket hijacking: a page of another origin riding on the user's browser.
      return { status: 403, reason: `origin ${JSON.stringify(req.headers.origin ?? null)} is not allowed` };
    }
    return null;
  }

  private async acceptSession(endpoint: Endpoint, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const { workers, handlers, sockets, emit, options } = this.host;
    let user = '';
    if (options.authorize !== null) {
      const decision = await decide(options.authorize, req, endpoint, options.authorizeTimeoutMs, this.host.report);
      if (socket.destroyed) return;
      if ('status' in decision) {
        this.refuse(socket, endpoint.project, decision.status, decision.reason);
        return;
      }
      user = decision.user;
    }
    const worker = workers.for(endpoint.project);
    let failure: Error | null = null;
    try {
      await handlers.prepare(worker, endpoint.project, endpoint.handler);
    } catch (error) {
      failure = error as Error;
      // A module that failed while it loaded was reported then, once.
      if ((error as IsletError).code !== 'ISLET_ERR_HANDLER_FAILED') emit('tenantError', tenantFailure(endpoint.project, asIsletError(error)));
    }
    if (socket.destroyed) return;
    // The engine began to close while the handler was being bundled.
    if (!this.host.running()) {
      this.refuse(socket, endpoint.project, 503, 'islet is not running');
      return;
    }
    this.wss ??= new WebSocketServer({ noServer: true, maxPayload: this.host.options.limits.maxMessageBytes, perMessageDeflate: false });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (failure !== null) {
        // The handler cannot run: 1011, the server cannot carry on with this session.
        ws.close(1011, `handler ${endpoint.handler} failed to load`);
        return;
      }
      sockets.accept(worker, {
        id: workers.allocateId(),
        kind: 'session',
        tenant: endpoint.project,
        handler: endpoint.handler,
        uri: endpoint.path,
        engine: endpoint.engine,
        state: 'open',
        endpoint: endpoint.name,
        user,
        host: '',
      }, ws);
    });
  }
}
