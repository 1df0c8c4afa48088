// The modules of a tenant's isolate: the sandbox's own (every generation's
// ids of Dirigible's websockets and response modules: the list the bundler
// leaves to the sandbox is engine/bundler.ts's SANDBOX_MODULES) and the
// tenant's bundled ones, each evaluated once and failed once.
import { emit, ErrorCtor, errorText, freeze, Op, progress, reflectApply, SafeMap, StringCtor } from './host.js';
import { newResponse, noResponse } from './response.js';
import { asRuns, NO_RUNS } from './run-holds.js';
import { encodeNamed, Progress } from './wire.js';
import { websockets } from './websockets.js';

type Factory = (this: unknown, exports: object, require: (name: string) => unknown, module: { exports: unknown }) => void;
interface ModuleRecord {
  /** null: the module failed to load (reported once) and is not run again. */
  factory: Factory | null;
  /** The worker's number for it, put in `progress` while its code loads. */
  number: number;
  exports: unknown;
  loaded: boolean;
}

const modules = new SafeMap<string, ModuleRecord>();
// Dirigible 10's SDK has a class `Websockets` of static methods, and `websockets` as its alias: here both are the one API object.
const sdkNet = freeze({ websockets, Websockets: websockets });
const builtins = new SafeMap<string, unknown>();
builtins.set('net/v4/websockets', websockets);
builtins.set('net/websockets', websockets);
builtins.set('sdk/net', sdkNet);
builtins.set('@aerokit/sdk/net', sdkNet);
/** The ids of Dirigible's response module, and what each gives (`sdk/http` has it as `response`): a run's own, or for a handler `noResponse`. */
const RESPONSE_IDS = new SafeMap<string, (response: object) => object>();
RESPONSE_IDS.set('http/v4/response', (response) => response);
RESPONSE_IDS.set('http/response', (response) => response);
const sdkHttp = (response: object): object => freeze({ response, Response: response });
RESPONSE_IDS.set('sdk/http', sdkHttp);
RESPONSE_IDS.set('@aerokit/sdk/http', sdkHttp);
const handlerHttp = new SafeMap<string, object>();
RESPONSE_IDS.forEach((wrap, id) => handlerHttp.set(id, wrap(noResponse)));

function failModule(name: string, error: string): void {
  const record = modules.get(name);
  if (record === undefined || record.factory === null) return;
  record.factory = null;
  emit(Op.ModuleFailed, 0, encodeNamed(name, error));
}

/** Runs a module's factory with its own `module` and `exports`. */
function runFactory(factory: Factory, require: (name: string) => unknown): unknown {
  const module = { exports: {} as unknown };
  reflectApply(factory, module.exports, [module.exports, require, module]);
  return module.exports;
}

/** A script run's `require`: the response module is that run's; everything else as for any module. */
function requireForRun(run: number): (name: string) => unknown {
  let response: object | null = null;
  const own = new SafeMap<string, object>();
  return (name) => {
    const wrap = RESPONSE_IDS.get(name);
    if (wrap === undefined) return requireModule(name);
    let module = own.get(name);
    if (module === undefined) own.set(name, (module = wrap((response ??= newResponse(run)))));
    return module;
  };
}

export function requireModule(name: string): unknown {
  const builtin = builtins.get(name) ?? handlerHttp.get(name);
  if (builtin !== undefined) return builtin;
  const record = modules.get(name);
  if (record === undefined || record.factory === null) {
    throw new ErrorCtor(
      `ISLET_ERR_MODULE_NOT_FOUND: module "${StringCtor(name)}" is not available in the sandbox (only net/v4/websockets, net/websockets, sdk/net, @aerokit/sdk/net, http/v4/response, http/response, sdk/http, @aerokit/sdk/http and the tenant's own bundled modules are)`,
    );
  }
  if (!record.loaded) {
    // A call stopped (or an isolate lost) while this is set fails the module: the worker reads it.
    const outer = progress[Progress.Loading]!;
    progress[Progress.Loading] = record.number + 1;
    try {
      // A module is the tenant's, whichever event loads it first: what its top-level code makes (an interval) holds no run.
      const factory = record.factory;
      record.exports = asRuns(NO_RUNS, () => runFactory(factory, requireModule));
      record.loaded = true;
    } catch (error) {
      // Reported once; the module is not evaluated again for every event.
      failModule(name, errorText(error));
      return null;
    } finally {
      progress[Progress.Loading] = outer;
    }
  }
  return record.exports;
}

/** A handler module's exports, or null when it could not be loaded (already reported). */
export function handlerExports(handler: string): Record<string, unknown> | null {
  const record = modules.get(handler);
  if (record === undefined || record.factory === null) return null;
  const exports = requireModule(handler);
  return typeof exports === 'object' && exports !== null ? (exports as Record<string, unknown>) : null;
}


/** Runs script `name` (defined like a module) as run `run`: each time it is asked to, not cached like a module. */
export function runScript(name: string, run: number): void {
  const record = modules.get(name);
  if (record === undefined || record.factory === null) throw new ErrorCtor(`script ${name} was not defined`);
  runFactory(record.factory, requireForRun(run));
}

/** Defines (or, on reload, replaces) a bundled module; null marks one that failed to load. */
export function define(name: string, factory: Factory | null, number: number): void {
  modules.set(name, { factory, number, exports: undefined, loaded: false });
}
