// What the engine serves: the endpoints the `*.websocket` descriptors
// declare, read when the engine first serves and again when files that
// islet runs change under the root (and only then: `islet serve . >
// islet.log` inside the root must not reload on its own output).
import path from 'node:path';
import { tenantOf } from '../bridge/handler-ids.js';
import type { Bundler } from './bundler.js';
import { asIsletError } from '../bridge/errors.js';
import { type Emit, failure, type Report } from './events.js';
import type { Handlers } from './handlers.js';
import { DESCRIPTOR_SUFFIX, type Endpoint, scanProjects } from './projects.js';
import type { Quarantine } from './quarantine.js';
import { handlerFileMatcher } from './server.js';
import type { SandboxWorker } from './supervisor.js';
import { TreeWatcher } from './watcher.js';

/** Files whose change may change a bundle (server code not bundled yet: a new import, a handler that was missing). */
const SOURCE_EXTENSIONS = new Set(['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts', '.json']);
/** How long the watcher waits for a burst of file changes to end. */
const RELOAD_DEBOUNCE_MS = 50;

export interface ServedHost {
  root: string;
  watch: boolean;
  bundler: Bundler;
  handlers: Handlers;
  quarantine: Quarantine;
  workers(): SandboxWorker[];
  emit: Emit;
  report: Report;
  running(): boolean;
}

export class Served {
  /** Endpoints by name. */
  private readonly endpoints = new Map<string, Endpoint>();
  private loaded = false;
  private watcher: TreeWatcher | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  /** Tenants whose files changed since the last reload. */
  private readonly changed = new Set<string>();
  /** What the last load found, to report only what changed: the endpoints (as JSON) and the descriptor problems. */
  private endpointsKey = '';
  private reportedProblems = new Set<string>();
  /** Whether a root-relative file is an endpoint's handler source; set at each load. */
  private isHandlerFile: (relative: string) => boolean = () => false;
  /** The endpoints' handlers of the last load, bundled. */
  private handlersBundled: Promise<unknown> = Promise.resolve();

  constructor(private readonly host: ServedHost) {}

  /** Loads the endpoints and starts watching the root, once. */
  load(): void {
    if (this.loaded) return;
    this.loaded = true;
    this.loadProjects();
    if (!this.host.watch) return;
    this.host.handlers.keep = true;
    this.watcher = new TreeWatcher(this.host.root, (relative) => {
      if (!this.mayMatter(relative)) return;
      this.changed.add(tenantOf(relative));
      if (this.reloadTimer !== null) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        try {
          this.reload();
        } catch (error) {
          this.host.report('reload', error);
        }
      }, RELOAD_DEBOUNCE_MS);
    });
  }

  get(name: string): Endpoint | undefined {
    this.load();
    return this.endpoints.get(name);
  }

  list(): Endpoint[] {
    this.load();
    return [...this.endpoints.values()];
  }

  /** Settles once the handlers of the last load are bundled: only then is all server code known (pages wait for it). */
  bundled(): Promise<unknown> {
    this.load();
    return this.handlersBundled;
  }

  /** Whether a file may not be served as a page: a handler's source, or code a handler or script imports. */
  isServerCode(requested: string, real: string): boolean {
    return this.isHandlerFile(requested) || this.host.bundler.isServerCode(real);
  }

  close(): void {
    this.watcher?.close();
    if (this.reloadTimer !== null) clearTimeout(this.reloadTimer);
  }

  /** Whether a change to this file (relative to the root) may change what islet serves or runs. */
  private mayMatter(relative: string): boolean {
    if (relative.split('/').some((segment) => segment.startsWith('.') || segment === 'node_modules')) return false;
    return relative.endsWith(DESCRIPTOR_SUFFIX) || SOURCE_EXTENSIONS.has(path.extname(relative)) || this.host.bundler.isServerCode(relative);
  }

  /** Reads the descriptors; tells what changed since the last load (nothing, when nothing did). */
  private loadProjects(): void {
    const scan = scanProjects(this.host.root, this.endpoints);
    this.endpoints.clear();
    for (const [name, endpoint] of scan.endpoints) this.endpoints.set(name, endpoint);
    const endpoints = [...this.endpoints.values()];
    this.isHandlerFile = handlerFileMatcher(endpoints.map((e) => e.handler));
    // Bundled now, not at the first session: what each handler imports is server code, refused as a page from the start.
    this.handlersBundled = Promise.allSettled(endpoints.map((endpoint) => this.host.handlers.bundle(endpoint.handler)));
    const reported = this.reportedProblems;
    this.reportedProblems = new Set(scan.problems.map((problem) => problem.error.message));
    for (const problem of scan.problems) if (!reported.has(problem.error.message)) this.host.emit('descriptorError', problem);
    const key = JSON.stringify(endpoints);
    if (key === this.endpointsKey) return;
    this.endpointsKey = key;
    this.host.emit('endpoints', endpoints);
  }

  /** Files under the root changed: read the descriptors again, and send the workers the handlers whose code changed. */
  private reload(): void {
    this.reloadTimer = null;
    if (!this.host.running()) return;
    // A quarantined tenant whose files changed gets another chance.
    for (const tenant of this.changed) this.host.quarantine.lift(tenant);
    const tenants = [...this.changed];
    this.changed.clear();
    this.host.handlers.forget();
    this.loadProjects();
    const sent = this.host.handlers.refresh(this.host.workers(), (tenant, error) => this.host.emit('tenantError', failure(tenant, asIsletError(error))));
    void Promise.allSettled([this.handlersBundled, ...sent]).then(() => this.host.emit('reloaded', { tenants }));
  }
}
