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
// refused before esbuild sees the file: esbuild would expand it into a glob
// and walk the folders it names, outside the root too (`"../../../" + x`
// walks the whole file system).
import * as acorn from 'acorn';
import { createHash } from 'node:crypto';
import { closeSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isBuiltin, SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { IsletError } from '../bridge/errors.js';
import { openFile, readOpened } from './files.js';
import { isInside, ROOT_TENANT, tenantOf } from '../bridge/handler-ids.js';
import type { BundledCode } from '../bridge/protocol.js';

/** Modules the sandbox runtime provides. */
export const SANDBOX_MODULES = new Set(['net/v4/websockets', 'net/websockets', 'sdk/net']);
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

/**
 * The first `require(…)` or `import(…)` in a JavaScript or TypeScript file
 * whose path is computed (see `computedCall`), as an error placed at it;
 * null when there is none. The file is parsed as esbuild will see it
 * (TypeScript stripped first, positions mapped back).
 */
async function computedImport(contents: Buffer, loader: 'js' | 'ts', file: string): Promise<esbuild.PartialMessage | null> {
  let js: esbuild.TransformResult;
  try {
    js = await esbuild.transform(contents, { loader, format: 'esm', target: 'esnext', sourcemap: 'external', logLevel: 'silent' });
  } catch {
    return null; // a syntax error: esbuild reports it when it bundles the file, and cannot expand anything then
  }
  let program: acorn.Program;
  try {
    program = parse(js.code);
  } catch (error) {
    return { text: `${file} cannot be checked for computed imports (${(error as Error).message})`, detail: 'refused' };
  }
  // An explicit stack: deeply nested tenant code must not overflow the host's.
  const stack: unknown[] = [program];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (const child of node) stack.push(child);
      continue;
    }
    if (typeof node !== 'object' || node === null || typeof (node as acorn.Node).type !== 'string') continue;
    const found = computedCall(node as acorn.Node);
    if (found !== null) {
      const at = new SourceMap(JSON.parse(js.map)).findEntry(found.loc!.start.line - 1, found.loc!.start.column);
      const source = js.code.slice(found.start, found.end);
      const text = `${source.length > 120 ? `${source.slice(0, 120)}…` : source} is computed; islet only bundles imports written out in full`;
      if (!('originalLine' in at)) return { text, detail: 'refused' };
      const lineText = contents.toString('utf8').split('\n')[at.originalLine] ?? '';
      return { text, detail: 'refused', location: { file, line: at.originalLine + 1, column: at.originalColumn, lineText } };
    }
    for (const value of Object.values(node)) if (typeof value === 'object' && value !== null) stack.push(value);
  }
  return null;
}

function parse(code: string): acorn.Program {
  const options = { ecmaVersion: 'latest', locations: true, allowHashBang: true, allowReturnOutsideFunction: true, allowAwaitOutsideFunction: true } as const;
  try {
    return acorn.parse(code, { ...options, sourceType: 'module' });
  } catch {
    return acorn.parse(code, { ...options, sourceType: 'script' }); // sloppy CommonJS (`with`, octal literals)
  }
}

/**
 * `node` when it is a require() or import() call that esbuild would expand
 * into a glob: its argument is a template literal with substitutions or a
 * `+` concatenation. Any other argument (a plain string, or a variable,
 * which is left to run time and fails there) is not.
 */
function computedCall(node: acorn.Node): acorn.Node | null {
  if (node.type === 'ImportExpression') return computedPath((node as acorn.ImportExpression).source) ? node : null;
  if (node.type !== 'CallExpression') return null;
  const call = node as acorn.CallExpression;
  if (call.callee.type !== 'Identifier' || call.callee.name !== 'require') return null;
  return call.arguments.some((arg) => computedPath(arg)) ? node : null;
}

/** Whether esbuild would read this argument as a glob: either branch of a condition counts, as esbuild resolves each. */
function computedPath(arg: acorn.Node): boolean {
  switch (arg.type) {
    case 'TemplateLiteral':
      return (arg as acorn.TemplateLiteral).expressions.length > 0;
    case 'BinaryExpression':
      return (arg as acorn.BinaryExpression).operator === '+';
    case 'ConditionalExpression': {
      const { consequent, alternate } = arg as acorn.ConditionalExpression;
      return computedPath(consequent) || computedPath(alternate);
    }
    case 'LogicalExpression': {
      const { left, right } = arg as acorn.LogicalExpression;
      return computedPath(left) || computedPath(right);
    }
    case 'SequenceExpression': {
      const { expressions } = arg as acorn.SequenceExpression;
      return computedPath(expressions[expressions.length - 1]!);
    }
    default:
      return false;
  }
}

const OUTSIDE = Symbol('outside the project');

/** A real path, relative to the root, when it is a file of `project`; null when it lies elsewhere. */
function ownRelative(realRoot: string, project: string, real: string): string | null {
  const own = toPosix(path.relative(realRoot, real));
  return isInside(realRoot, real) && tenantOf(own) === project ? own : null;
}

/**
 * Where `relative` (root-relative) really is, root-relative, when it is a
 * file of `project`; OUTSIDE when it exists but really lies elsewhere (a
 * link); null when there is no such file.
 */
function ownFile(realRoot: string, project: string, relative: string): string | typeof OUTSIDE | null {
  let real: string;
  try {
    real = realpathSync(path.join(realRoot, relative));
  } catch {
    return null;
  }
  const own = ownRelative(realRoot, project, real);
  if (own === null) return OUTSIDE;
  try {
    return statSync(real).isFile() ? own : null;
  } catch {
    return null;
  }
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
      throw new IsletError('ISLET_ERR_LIMIT', `${relative}: its bundle of ${code.length} bytes is over the limit of ${this.maxBundleBytes} (limit maxBundleBytes)`);
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
            if (typeof file !== 'string') return refuse(`${entry} is not a file of project "${project}" (a link to another project's file, or out of the root)`);
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
          if (!opened.isFile || ownRelative(root, project, opened.real) === null) {
            closeSync(opened.fd);
            return { errors: [{ text: `${args.path} is not a file of project "${project}" (a link to another project's file, or out of the root)`, detail: 'refused' }] };
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
    if (limited !== undefined) return new IsletError('ISLET_ERR_LIMIT', limited.text);
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
