// Bundles tenant scripts and handler modules with esbuild into one CommonJS
// body each. The sandbox API modules stay external (the isolate's runtime
// provides them); anything else outside the importing file's project, and any
// Node built-in, is refused at bundle time with the import and the file
// named. Bundles are cached by the content of all their inputs, and their
// source maps turn isolate stack frames back into the tenant's own lines.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isBuiltin, SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { IsletError } from '../bridge/errors.js';
import { isInside, tenantOf } from '../bridge/handler-ids.js';
import type { BundledCode } from '../bridge/protocol.js';

/** Modules the sandbox runtime provides. */
export const SANDBOX_MODULES = new Set(['net/v4/websockets', 'net/websockets', 'sdk/net']);
const FILE_PREFIX = 'islet-bundle:';
const FRAME = /islet-bundle:([0-9a-f]{12})\/[^\n]*?:(\d+):(\d+)/g;
/** Source maps kept for stack traces; the oldest go first. */
const MAX_MAPS = 2000;
const RECURSE = Symbol('islet-resolve');

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

export class Bundler {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly maps = new Map<string, SourceMap>();

  constructor(
    private readonly root: string,
    private readonly maxBundleBytes = Infinity,
  ) {}

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
    let result: esbuild.BuildResult<{ write: false; metafile: true }>;
    try {
      result = await esbuild.build({
        entryPoints: [path.join(this.root, relative)],
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
        mainFields: ['module', 'main'],
        resolveExtensions: ['.ts', '.mts', '.js', '.mjs', '.cjs', '.json'],
        plugins: [this.sandboxImports(project)],
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
    const inputs = await Promise.all(
      Object.keys(result.metafile.inputs).map(async (input): Promise<[string, string]> => {
        const abs = path.resolve(this.root, input);
        return [abs, sha(await readFile(abs))];
      }),
    );
    const bundle = { name, file, code };
    this.cache.set(relative, { inputs, bundle });
    return bundle;
  }

  /** The last bundle made of `relative`, without checking its inputs again. */
  cached(relative: string): BundledCode | undefined {
    return this.cache.get(relative)?.bundle;
  }

  /** Rewrites isolate stack frames into the tenant's own files and lines. */
  mapStack(text: string): string {
    // Frames of the sandbox runtime say nothing to a tenant: drop them.
    const own = text.split('\n').filter((line) => !line.includes('islet:runtime:')).join('\n');
    return own.replace(FRAME, (frame, hash: string, line: string, column: string) => {
      const entry = this.maps.get(hash)?.findEntry(Number(line) - 1, Number(column) - 1);
      if (entry === undefined || !('originalSource' in entry)) return frame;
      return `${entry.originalSource}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
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

  /** The import policy, as an esbuild plugin. */
  private sandboxImports(project: string): esbuild.Plugin {
    const root = this.root;
    const refuse = (why: string): esbuild.OnResolveResult => ({ errors: [{ text: why, detail: 'refused' }] });
    return {
      name: 'islet-sandbox-imports',
      setup(build) {
        build.onResolve({ filter: /.*/ }, async (args) => {
          if (args.kind === 'entry-point' || args.pluginData === RECURSE) return undefined;
          const spec = args.path;
          if (SANDBOX_MODULES.has(spec)) return { path: spec, external: true };
          if (isBuiltin(spec)) {
            return refuse(`"${spec}" is a Node built-in module; the sandbox has none (it offers ${[...SANDBOX_MODULES].join(', ')})`);
          }
          let target = spec;
          let resolveDir = args.resolveDir;
          if (!spec.startsWith('.') && !spec.startsWith('/')) {
            // A Dirigible-style module id of the same project ("my-project/lib/util").
            if (tenantOf(spec) !== project || project === '.') {
              return refuse(
                `"${spec}" is a package or another project outside project "${project}"; import relative files of the project, "${project}/…" module ids, or ${[...SANDBOX_MODULES].join(', ')}`,
              );
            }
            target = `./${spec}`;
            resolveDir = root;
          }
          const result = await build.resolve(target, { kind: args.kind, importer: args.importer, resolveDir, pluginData: RECURSE });
          if (result.errors.length > 0) return { errors: result.errors };
          const relative = toPosix(path.relative(root, result.path));
          if (!isInside(root, result.path) || tenantOf(relative) !== project) {
            return refuse(`"${spec}" resolves outside project "${project}"; a project may only import its own files`);
          }
          return result;
        });
      },
    };
  }

  private buildError(relative: string, error: unknown): IsletError {
    const failure = error as esbuild.BuildFailure;
    if (!Array.isArray(failure.errors)) return new IsletError('ISLET_ERR_BUNDLE', `${relative}: ${String(error)}`);
    const refused = failure.errors.some((e) => e.detail === 'refused');
    const lines = failure.errors.map((e) => {
      const where = e.location ? `${toPosix(e.location.file)}:${e.location.line}:${e.location.column + 1}` : relative;
      return refused && e.detail === 'refused' ? `import in ${where}: ${e.text}` : `${where}: ${e.text}`;
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
