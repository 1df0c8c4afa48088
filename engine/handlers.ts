// Handler bundles: made by the bundler, kept while the root is watched (a
// session per connection must not read the files again), and sent to each
// worker once per version. A handler that failed while it loaded is refused
// until its bundle changes.
import { IsletError } from '../bridge/errors.js';
import { resolveHandler, tenantOf } from '../bridge/handler-ids.js';
import type { BundledCode, SocketInfo } from '../bridge/protocol.js';
import type { Bundler } from './bundler.js';
import type { SandboxWorker } from './supervisor.js';

/** Module names of scripts (each run defines its script again), apart from handler ids. */
export const SCRIPT_PREFIX = 'script:';

export class Handlers {
  /** Bundles by handler id, while `keep` is set (the root is watched), until `forget`. */
  private readonly bundles = new Map<string, Promise<BundledCode>>();
  /** Handler modules that failed while they loaded, by id: the bundle file that failed. */
  private readonly failed = new Map<string, string>();
  keep = false;

  constructor(
    private readonly root: string,
    private readonly bundler: Bundler,
  ) {}

  /**
   * A handler's bundle. While the root is watched it is made once until the
   * next reload; otherwise the bundler checks the files' content each time.
   */
  bundle(handler: string): Promise<BundledCode> {
    const fresh = async (): Promise<BundledCode> => {
      const resolved = resolveHandler(this.root, handler, tenantOf(handler));
      return this.bundler.bundle(resolved.relative, resolved.id);
    };
    if (!this.keep) return fresh();
    let bundle = this.bundles.get(handler);
    if (bundle === undefined) this.bundles.set(handler, (bundle = fresh()));
    return bundle;
  }

  /** Files changed: bundles are made again. */
  forget(): void {
    this.bundles.clear();
  }

  /** The module failed while it loaded: refused until its bundle is another file. */
  markFailed(handler: string, file: string): void {
    this.failed.set(handler, file);
  }

  /** Bundles a handler and sends it to the worker; throws when it cannot run (a bundle error, or it failed while it loaded). */
  async prepare(worker: SandboxWorker, tenant: string, handler: string): Promise<void> {
    const bundle = await this.bundle(handler);
    if (this.failed.get(handler) === bundle.file) {
      throw new IsletError('ISLET_ERR_HANDLER_FAILED', `${handler} failed while it loaded; it runs again once its files change`);
    }
    this.send(worker, tenant, bundle);
  }

  /** Sends a bundle to a worker unless it already has this version; `first`: ahead of everything queued. */
  send(worker: SandboxWorker, tenant: string, bundle: BundledCode, first = false): void {
    let sent = worker.modules.get(tenant);
    if (sent === undefined) worker.modules.set(tenant, (sent = new Map()));
    if (sent.get(bundle.name) === bundle.file) return;
    sent.set(bundle.name, bundle.file);
    const message = { t: 'module', tenant, module: bundle } as const;
    if (first) worker.sendFirst(message);
    else worker.send(message, tenant);
  }

  /** A restarted worker gets the handlers of its open sockets, from the bundler's cache, before anything queued. */
  resend(worker: SandboxWorker, sockets: SocketInfo[]): void {
    const handlers = new Map<string, SocketInfo>();
    for (const info of sockets) handlers.set(info.handler, info);
    for (const info of handlers.values()) {
      let bundle: BundledCode | undefined;
      try {
        bundle = this.bundler.cached(resolveHandler(this.root, info.handler, info.tenant).relative);
      } catch {
        // The handler file is gone; its sockets' events find no module.
      }
      if (bundle !== undefined) this.send(worker, info.tenant, { ...bundle, name: info.handler }, true);
    }
  }

  /**
   * After a reload: a new bundle of every handler a worker holds whose code
   * changed. The tenant's isolate replaces the module: open sessions and
   * clients carry on with the new code from their next event.
   */
  refresh(workers: SandboxWorker[], failed: (tenant: string, error: Error) => void): Promise<unknown>[] {
    const sent: Promise<unknown>[] = [];
    for (const worker of workers) {
      for (const [tenant, modules] of worker.modules) {
        for (const name of modules.keys()) {
          if (name.startsWith(SCRIPT_PREFIX)) continue;
          sent.push(this.bundle(name).then((bundle) => this.send(worker, tenant, bundle), (error: Error) => failed(tenant, error)));
        }
      }
    }
    return sent;
  }
}
