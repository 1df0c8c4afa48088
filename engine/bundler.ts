// Bundles tenant scripts and handler modules with esbuild into one CommonJS
// body each. The sandbox API modules stay external (the isolate's runtime
// provides them); anything else outside the importing file's project, and any
// Node built-in, is refused at bundle time with the import and the file
// named. Bundles are cached by the content of all their inputs, and their
// source maps turn isolate stack frames back into the tenant's own lines.
//
// esbuild never touches the file system for tenant code: the plugin below
// resolves every import and reads every file itself, deciding on the file's
// real path (symlinks followed) whether it lies in the importing project.
// A computed import (`require("../x/" + name)`, a template literal) is
// refused before esbuild sees the file (computed-imports.ts).
import { createHash } from 'node:crypto';
import { closeSync, realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isBuiltin, SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { IsletError, type WireError } from '../bridge/errors.js';
import { computedImport } from './computed-imports.js';
import { isOwnOpened, notOwnFile, openFile, OUTSIDE, ownFile, readOpened } from './files.js';
import { ROOT_TENANT, tenantOf } from '../bridge/handler-ids.js';
import type { BundledCode } from '../bridge/protocol.js';

/** Modules the sandbox runtime provides. */
export const SANDBOX_MODULES = new Set(['net/v4/websockets', 'net/websockets', 'sdk/net', '@aerokit/sdk/net', 'http/v4/response', 'http/response', 'sdk/http', '@aerokit/sdk/http']);
const FILE_PREFIX = 'islet-bundle:';
// Linear: the file part cannot hold a ':', so no match attempt reads past
// the next one (and every 'islet-bundle:' holds one).
const FRAME = /islet-bundle:([0-9a-f]{12})\/[^\n:]*:(\d+):(\d+)/g;
/** Longest error text mapped and passed on; a tenant chooses its errors' size. */
const MAX_TRACE = 64 * 1024;
/** Source maps kept for stack traces; the oldest go first. */
const MAX_MAPS = 2000;
/** esbuild's namespace for tenant files; their paths are relative to the root, forward slashes. */
const NAMESPACE = 'islet';
/** What an import without an extension may name, tried in this order (then `index` + each). */
const EXTENSIONS = ['.ts', '.mts', '.js', '.mjs', '.cjs', '.json'];
const LOADERS: Record<string, esbuild.Loader> = { '.ts': 'ts', '.mts': 'ts', '.cts': 'ts', '.js': 'js', '.mjs': 'js', '.cjs': 'js', '.json': 'json' };
/** Import attributes (`with { type }`) a tenant may use on its own files. */
const TYPED_LOADERS: Record<string, esbuild.Loader> = { text: 'text', json: 'json' };

interface CacheEntry {
  inputs: [file: string, hash: string][];
  bundle: BundledCode;
}

function sha(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}

function withoutNamespace(name: string): string {
  return name.startsWith(`${NAMESPACE}:`) ? name.slice(NAMESPACE.length + 1) : name;
}

/** Files an import of `target` (root-relative, no extension or with one) may name, in order. */
function candidates(target: string): string[] {
  return [target, ...EXTENSIONS.map((ext) => target + ext), ...EXTENSIONS.map((ext) => `${target}/index${ext}`)];
}

export class Bundler {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly maps = new Map<string, SourceMap>();
  /** Every file that went into a bundle (real paths, relative to the root): server code, never served as a page. */
  private readonly serverFiles = new Set<string>();

  /** The root with its own links resolved: what tenant files' real paths are compared with. */
  private readonly realRoot: string;

  constructor(
    private readonly root: string,
    private readonly maxBundleBytes = Infinity,
  ) {
    this.realRoot = realpathSync(root);
  }

  /**
   * Bundles the file at `relative` (to the root, forward slashes) under the
   * module name `name`. Throws an IsletError naming the file and line.
   */
  async bundle(relative: string, name: string = relative): Promise<BundledCode> {
    const cached = this.cache.get(relative);
    if (cached !== undefined && (await this.unchanged(cached))) {
      return cached.bundle.name === name ? cached.bundle : { ...cached.bundle, name };
    }
    const project = tenantOf(relative);
    /** What each file read for this bundle hashed to, as it was read. */
    const read = new Map<string, string>();
    let result: esbuild.BuildResult<{ write: false; metafile: true }>;
    try {
      result = await esbuild.build({
        entryPoints: [relative],
        absWorkingDir: this.root,
        bundle: true,
        write: false,
        format: 'cjs',
        platform: 'neutral',
        target: 'es2022',
        // Output "in" the root, so the source map names sources relative to it.
        outfile: path.join(this.root, 'islet-bundle.js'),
        sourcemap: 'external',
        sourcesContent: false,
        metafile: true,
        logLevel: 'silent',
        // No tsconfig.json is looked for: tenant files are not in esbuild's file namespace.
        tsconfigRaw: {},
        plugins: [this.tenantFiles(project, read)],
      });
    } catch (error) {
      throw this.buildError(relative, error);
    }
    let code = '';
    let map = '';
    for (const file of result.outputFiles) {
      if (file.path.endsWith('.map')) map = file.text;
      else code = file.text;
    }
    if (code.length > this.maxBundleBytes) {
      throw new IsletError('ISLET_ERR_LIMIT_BUNDLE', `${relative}: its bundle of ${code.length} bytes is over the limit of ${this.maxBundleBytes} (limit maxBundleBytes)`);
    }
    const hash = sha(code).slice(0, 12);
    const file = `${FILE_PREFIX}${hash}/${relative}`;
    this.remember(hash, new SourceMap(JSON.parse(map)));
    // Keyed by the contents the bundle was made of, not read again.
    const inputs = Object.keys(result.metafile.inputs).map((input): [string, string] => {
      const own = withoutNamespace(input);
      this.serverFiles.add(own);
      return [path.join(this.realRoot, own), read.get(own) ?? ''];
    });
    const bundle = { name, file, code };
    this.cache.set(relative, { inputs, bundle });
    return bundle;
  }

  /** Whether a file (its real path, relative to the root) went into any bundle: a handler, a script, or what they import. */
  isServerCode(realRelative: string): boolean {
    return this.serverFiles.has(realRelative);
  }

  /** The last bundle made of `relative`, without checking its inputs again. */
  cached(relative: string): BundledCode | undefined {
    return this.cache.get(relative)?.bundle;
  }

  /** Rewrites isolate stack frames into the tenant's own files and lines. */
  /** A tenant's error from a worker, its stack frames mapped to the tenant's files. */
  mapError(error: WireError): IsletError {
    return new IsletError(error.code, this.mapStack(error.detail));
  }

  mapStack(error: string): string {
    const text = error.length > MAX_TRACE ? `${error.slice(0, MAX_TRACE)} … [cut at ${MAX_TRACE} characters]` : error;
    // Frames of the sandbox runtime say nothing to a tenant: drop them.
    const own = text.split('\n').filter((line) => !line.includes('islet:runtime:')).join('\n');
    return own.replace(FRAME, (frame, hash: string, line: string, column: string) => {
      const entry = this.maps.get(hash)?.findEntry(Number(line) - 1, Number(column) - 1);
      if (entry === undefined || !('originalSource' in entry)) return frame;
      return `${withoutNamespace(entry.originalSource)}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
    });
  }

  private async unchanged(entry: CacheEntry): Promise<boolean> {
    try {
      const hashes = await Promise.all(entry.inputs.map(async ([file]) => sha(await readFile(file))));
      return hashes.every((hash, i) => hash === entry.inputs[i]![1]);
    } catch {
      return false;
    }
  }

  private remember(hash: string, map: SourceMap): void {
    this.maps.delete(hash);
    this.maps.set(hash, map);
    if (this.maps.size > MAX_MAPS) this.maps.delete(this.maps.keys().next().value as string);
  }

  /**
   * The import policy, as an esbuild plugin that resolves and loads every
   * tenant file itself. A file is the project's when its real path lies in
   * the project's folder; nothing outside it is read, nor even looked for:
   * an import is judged on its spelling first, then on where it really leads.
   * `read` gets the hash of each file as it was read.
   */
  private tenantFiles(project: string, read: Map<string, string>): esbuild.Plugin {
    const root = this.realRoot;
    const maxBytes = this.maxBundleBytes;
    const refuse = (why: string): esbuild.OnResolveResult => ({ errors: [{ text: why, detail: 'refused' }] });
    const outside = (spec: string): esbuild.OnResolveResult =>
      refuse(`"${spec}" resolves outside project "${project}"; a project may only import its own files`);
    return {
      name: 'islet-tenant-files',
      setup(build) {
        build.onResolve({ filter: /.*/ }, (args) => {
          const spec = args.path;
          if (args.kind === 'entry-point') {
            const entry = path.posix.normalize(spec);
            const file = ownFile(root, project, entry);
            if (typeof file !== 'string') return refuse(notOwnFile(entry, project));
            return { path: file, namespace: NAMESPACE };
          }
          if (SANDBOX_MODULES.has(spec)) return { path: spec, external: true };
          if (isBuiltin(spec)) {
            return refuse(`"${spec}" is a Node built-in module; the sandbox has none (it offers ${[...SANDBOX_MODULES].join(', ')})`);
          }
          let target: string;
          if (spec.startsWith('./') || spec.startsWith('../') || spec === '.' || spec === '..') {
            target = path.posix.join(path.posix.dirname(args.importer), spec);
          } else if (spec.startsWith('/') || spec.includes('\\') || spec.includes('\0')) {
            return outside(spec);
          } else if (tenantOf(spec) === project && project !== ROOT_TENANT) {
            // A Dirigible-style module id of the same project ("my-project/lib/util").
            target = path.posix.normalize(spec);
          } else {
            return refuse(
              `"${spec}" is a package or another project outside project "${project}"; import relative files of the project, "${project}/…" module ids, or ${[...SANDBOX_MODULES].join(', ')}`,
            );
          }
          // Judged on its spelling before anything is looked up: no probing outside the project.
          if (target.startsWith('../') || target === '..' || tenantOf(target) !== project) return outside(spec);
          for (const candidate of candidates(target)) {
            const file = ownFile(root, project, candidate);
            if (file === OUTSIDE) return outside(spec);
            if (file !== null) return { path: file, namespace: NAMESPACE };
          }
          return { errors: [{ text: `Could not resolve "${spec}" (tried ${candidates(target).join(', ')})` }] };
        });
        // What a bundle's files may weigh together, read so far (limit maxBundleBytes).
        let budget = maxBytes;
        build.onLoad({ filter: /.*/, namespace: NAMESPACE }, async (args) => {
          const type = args.with.type;
          const loader = type === undefined ? LOADERS[path.posix.extname(args.path)] : TYPED_LOADERS[type];
          if (loader === undefined) {
            const what = type === undefined ? `${path.posix.extname(args.path) || 'extension-less'} files` : `import type "${type}"`;
            return { errors: [{ text: `${args.path}: islet cannot import ${what}; it imports ${Object.keys(LOADERS).join(' ')} files, and others with { type: "text" }` }] };
          }
          // Judged again by what is opened: the file may have become a link since it was resolved.
          const opened = openFile(path.join(root, args.path));
          if (opened === null) return { errors: [{ text: `${args.path} cannot be read` }] };
          if (!isOwnOpened(root, project, opened)) {
            closeSync(opened.fd);
            return { errors: [{ text: notOwnFile(args.path, project), detail: 'refused' }] };
          }
          if (opened.size > budget) {
            closeSync(opened.fd);
            return { errors: [{ text: `${args.path} is ${opened.size} bytes, more than the ${budget} left of the bundle's ${maxBytes} (limit maxBundleBytes)`, detail: 'limit' }] };
          }
          budget -= opened.size;
          const contents = readOpened(opened);
          read.set(args.path, sha(contents));
          if (loader === 'js' || loader === 'ts') {
            const computed = await computedImport(contents, loader, args.path);
            if (computed !== null) return { errors: [computed] };
          }
          return { contents, loader };
        });
      },
    };
  }

  private buildError(relative: string, error: unknown): IsletError {
    const failure = error as esbuild.BuildFailure;
    if (!Array.isArray(failure.errors)) return new IsletError('ISLET_ERR_BUNDLE', `${relative}: ${String(error)}`);
    const refused = failure.errors.some((e) => e.detail === 'refused');
    const limited = failure.errors.find((e) => e.detail === 'limit');
    if (limited !== undefined) return new IsletError('ISLET_ERR_LIMIT_BUNDLE', limited.text);
    const lines = failure.errors.map((e) => {
      const where = e.location ? `${withoutNamespace(toPosix(e.location.file))}:${e.location.line}:${e.location.column + 1}` : relative;
      if (e.detail !== 'refused') return `${where}: ${e.text}`;
      return e.location ? `import in ${where}: ${e.text}` : e.text;
    });
    return new IsletError(refused ? 'ISLET_ERR_IMPORT_REFUSED' : 'ISLET_ERR_BUNDLE', lines.join('\n'));
  }
}

/** Bundles the sandbox API runtime that every isolate starts with. */
export async function bundleRuntime(): Promise<string> {
  const entry = new URL('../../sandbox-api/runtime.ts', import.meta.url);
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(entry)],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'neutral',
    target: 'es2022',
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}
