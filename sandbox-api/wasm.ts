// WebAssembly for tenant code, with its memory bounded. A WebAssembly
// memory, and a module's compiled code, live outside the V8 heap, so the
// isolate's memoryLimit does not see them: one module can reserve gigabytes.
// Every memory a tenant makes, with `new WebAssembly.Memory` or by
// instantiating a module that declares its own, is charged at its maximum
// size (what it may grow to), and every module it compiles at a multiple of
// its size, against the tenant's `wasmMemoryMiB`, for the isolate's lifetime;
// past it, the call throws. A memory declared without a maximum is charged at the largest
// size V8 allows. The module bytes are copied before they are read, and the
// copy is what is compiled, so what was charged is what runs.
import { config, freeze, RangeErrorCtor, SafeMap, TypeErrorCtor, uncurryGetter } from './host.js';

// The standard library types do not describe WebAssembly; what is used here:
type WasmModule = object;
type WasmInstance = object;
type WasmMemory = object;
type WasmImports = object;
interface WasmNamespace {
  Module: { new (bytes: Uint8Array): WasmModule; prototype: object; exports: unknown; imports: unknown; customSections: unknown };
  Instance: { new (module: WasmModule, imports?: WasmImports): WasmInstance; prototype: object };
  Memory: { new (descriptor: { initial: number; maximum: number; shared: boolean }): WasmMemory; prototype: object };
}
declare const WebAssembly: WasmNamespace;

const PAGE = 64 * 1024;
/** Memory a compiled module takes, as a multiple of its size in bytes (measured: about 3.3 times). */
const CODE_FACTOR = 4;
/** What a memory without a maximum may grow to (V8's limit for 32-bit memories, 4 GiB). */
const MAX_PAGES = 65536;

const Wasm = WebAssembly;
const OriginalModule = Wasm.Module;
const OriginalInstance = Wasm.Instance;
const OriginalMemory = Wasm.Memory;
const Uint8ArrayCtor = Uint8Array;
const isView = ArrayBuffer.isView;
const getPrototypeOf = Object.getPrototypeOf;
const defineProperty = Object.defineProperty;
const TypedArray = getPrototypeOf(Uint8Array.prototype) as object;
const viewBuffer = uncurryGetter<ArrayBufferLike>(TypedArray, 'buffer');
const viewOffset = uncurryGetter<number>(TypedArray, 'byteOffset');
const viewLength = uncurryGetter<number>(TypedArray, 'byteLength');
const dataViewBuffer = uncurryGetter<ArrayBufferLike>(DataView.prototype, 'buffer');
const dataViewOffset = uncurryGetter<number>(DataView.prototype, 'byteOffset');
const dataViewLength = uncurryGetter<number>(DataView.prototype, 'byteLength');
const bufferLength = uncurryGetter<number>(ArrayBuffer.prototype, 'byteLength');
const isDataView = (value: object): boolean => {
  try {
    dataViewLength(value);
    return true;
  } catch {
    return false;
  }
};

let chargedPages = 0;
/** Pages each compiled module's own memories may grow to. */
const modulePages = new SafeMap<object, number>();

function budgetPages(): number {
  return config.wasmMemoryMiB * 16;
}

function charge(pages: number, what: string): void {
  if (chargedPages + pages > budgetPages()) {
    throw new RangeErrorCtor(
      `ISLET_ERR_LIMIT_WASM_MEMORY: ${what} may grow to ${(pages * PAGE) / 2 ** 20} MiB; with the ${(chargedPages * PAGE) / 2 ** 20} MiB of WebAssembly memory this tenant made already, that is over ${config.wasmMemoryMiB} MiB (limit wasmMemoryMiB)`,
    );
  }
  chargedPages += pages;
}

/** A copy of the bytes a tenant handed over (an ArrayBuffer or a view of one), read through the captured getters. */
function copyBytes(source: unknown): Uint8Array {
  if (typeof source !== 'object' || source === null) throw new TypeErrorCtor('WebAssembly: the module must be an ArrayBuffer or a view of one');
  let buffer: ArrayBufferLike;
  let offset = 0;
  let length: number;
  if (isView(source)) {
    const dataView = isDataView(source);
    buffer = dataView ? dataViewBuffer(source) : viewBuffer(source);
    offset = dataView ? dataViewOffset(source) : viewOffset(source);
    length = dataView ? dataViewLength(source) : viewLength(source);
  } else {
    buffer = source as ArrayBufferLike;
    length = bufferLength(buffer);
  }
  const copy = new Uint8ArrayCtor(length);
  const from = new Uint8ArrayCtor(buffer, offset, length);
  for (let i = 0; i < length; i++) copy[i] = from[i]!;
  return copy;
}

/** Pages the memories a module declares (not imports) may grow to; throws on bytes that are not a module. */
function ownMemoryPages(bytes: Uint8Array): number {
  let at = 8;
  const byte = (): number => {
    if (at >= bytes.length) throw new RangeErrorCtor('WebAssembly: the module ends early');
    return bytes[at++]!;
  };
  const leb = (): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = byte();
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    throw new RangeErrorCtor('WebAssembly: a number in the module is too long');
  };
  let pages = 0;
  while (at < bytes.length) {
    const id = byte();
    const size = leb();
    const end = at + size;
    if (id === 5) {
      const count = leb();
      for (let i = 0; i < count; i++) {
        const flags = byte();
        leb(); // initial
        const maximum = (flags & 1) !== 0 ? leb() : MAX_PAGES;
        pages += maximum > MAX_PAGES ? MAX_PAGES : maximum;
      }
    }
    at = end;
  }
  return pages;
}

/**
 * Compiles a copy of a tenant's module bytes. Compiled code lives outside
 * the heap too (a worker reached 900 MB keeping 195 compiled modules of
 * 4 MiB): a module is charged CODE_FACTOR times its size before it compiles.
 */
function compileCopy(bytes: Uint8Array): WasmModule {
  const memoryPages = ownMemoryPages(bytes);
  charge(Math.ceil((bytes.length * CODE_FACTOR) / PAGE), 'compiling this module');
  const module = new OriginalModule(bytes);
  modulePages.set(module, memoryPages);
  return module;
}

function chargeInstance(module: unknown): void {
  const pages = modulePages.get(module as object);
  if (pages === undefined) throw new TypeErrorCtor('WebAssembly: instantiate takes a module made in this sandbox');
  if (pages > 0) charge(pages, 'the memory this module declares');
}

function Module(this: unknown, bytes: unknown): WasmModule {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Module must be called with 'new'");
  return compileCopy(copyBytes(bytes));
}

function Instance(this: unknown, module: unknown, imports?: WasmImports): WasmInstance {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Instance must be called with 'new'");
  chargeInstance(module);
  return new OriginalInstance(module as WasmModule, imports);
}

function Memory(this: unknown, descriptor: unknown): WasmMemory {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Memory must be called with 'new'");
  if (typeof descriptor !== 'object' || descriptor === null) throw new TypeErrorCtor('WebAssembly.Memory takes a descriptor');
  const { initial, maximum, shared } = descriptor as { initial?: unknown; maximum?: unknown; shared?: unknown };
  const start = Number(initial);
  // Without a maximum it could grow to 4 GiB: it is made with its initial size as its maximum instead.
  const max = maximum === undefined ? start : Number(maximum);
  charge(max >= 0 && max <= MAX_PAGES ? max : MAX_PAGES, 'this WebAssembly.Memory');
  return new OriginalMemory({ initial: start, maximum: max, shared: shared === true });
}

// The promise-returning forms compile in the call that asks, within its
// budget: V8 finishes an asynchronous compile on a task that an isolate only
// called synchronously never runs, so its promise would never settle.
async function compile(bytes: unknown): Promise<WasmModule> {
  return compileCopy(copyBytes(bytes));
}

async function instantiate(source: unknown, imports?: WasmImports): Promise<unknown> {
  if (modulePages.has(source as object)) {
    chargeInstance(source);
    return new OriginalInstance(source as WasmModule, imports);
  }
  const module = await compile(source);
  chargeInstance(module);
  return { module, instance: new OriginalInstance(module, imports) };
}

/** Puts the bounded WebAssembly on the global object (or none, with a limit of 0). */
export function installWasm(global: typeof globalThis): void {
  const g = global as unknown as Record<string, unknown>;
  if (config.wasmMemoryMiB === 0) {
    delete g.WebAssembly;
    return;
  }
  // The originals stay reachable only through objects they made: point those back at the wrappers.
  for (const [wrapper, original] of [
    [Module, OriginalModule],
    [Instance, OriginalInstance],
    [Memory, OriginalMemory],
  ] as const) {
    defineProperty(wrapper, 'prototype', { value: original.prototype });
    defineProperty(original.prototype, 'constructor', { value: wrapper, writable: true, configurable: true });
  }
  defineProperty(Module, 'exports', { value: OriginalModule.exports, writable: true, configurable: true });
  defineProperty(Module, 'imports', { value: OriginalModule.imports, writable: true, configurable: true });
  defineProperty(Module, 'customSections', { value: OriginalModule.customSections, writable: true, configurable: true });
  const api: Record<string, unknown> = {};
  for (const name of Object.getOwnPropertyNames(Wasm)) api[name] = (Wasm as unknown as Record<string, unknown>)[name];
  api.Module = Module;
  api.Instance = Instance;
  api.Memory = Memory;
  api.compile = compile;
  api.instantiate = instantiate;
  delete api.compileStreaming;
  delete api.instantiateStreaming;
  g.WebAssembly = freeze(api);
}
