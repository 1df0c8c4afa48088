// Handler ids and tenants. A handler id `project/path/name` names the file
// ROOT/project/path/name with .js, .ts, .mjs tried in turn; the first path
// segment is the project, and a project is a tenant. Files directly in the
// root belong to the root tenant, named ".". The worker resolves ids when
// `createWebsocket` is called (it must throw at once); the host resolves them
// for descriptors and scripts. Both use this file.
import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { IsletError } from './errors.js';

/** Engine names islet runs; Dirigible's executor names are accepted as aliases and run in V8 too. */
export const ENGINES = ['javascript', 'v8', 'isolated-vm'] as const;
export const ENGINE_ALIASES = ['rhino', 'nashorn', 'graalvm', 'graalium'] as const;

/** The engine name to record, `javascript` when omitted; throws ISLET_ERR_BAD_ENGINE. */
export function checkEngine(engine: unknown): string {
  if (engine === undefined || engine === null) return 'javascript';
  if (typeof engine === 'string' && (ENGINES as readonly string[]).concat(ENGINE_ALIASES).includes(engine)) return engine;
  throw new IsletError(
    'ISLET_ERR_BAD_ENGINE',
    `engine ${typeof engine === 'string' ? `"${engine.slice(0, 100)}"` : `of type ${typeName(engine)}`} is not supported; use ${ENGINES.join(', ')} (Dirigible's ${ENGINE_ALIASES.join(', ')} are accepted as aliases) or omit it`,
  );
}

export const HANDLER_EXTENSIONS = ['.js', '.ts', '.mjs'] as const;
export const ROOT_TENANT = '.';
const MAX_ID_LENGTH = 1024;

/** The tenant that owns a path relative to the root (forward slashes). */
export function tenantOf(relativePath: string): string {
  const slash = relativePath.indexOf('/');
  return slash === -1 ? ROOT_TENANT : relativePath.slice(0, slash);
}

/** Whether `file` (absolute) lies inside `root` (absolute, resolved). */
export function isInside(root: string, file: string): boolean {
  const rel = path.relative(root, file);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

export interface ResolvedHandler {
  /** The handler id as given. */
  id: string;
  /** Absolute path of the module file. */
  file: string;
  /** Path of the module file relative to the root, with forward slashes. */
  relative: string;
}

/**
 * Resolves a handler id against the projects root. When `tenant` is given the
 * handler must belong to it: a tenant never runs another project's code.
 */
export function resolveHandler(root: string, id: unknown, tenant?: string): ResolvedHandler {
  if (typeof id !== 'string' || id.length === 0) {
    throw new IsletError('ISLET_ERR_BAD_HANDLER_ID', `handler must be a non-empty string, got ${describe(id)}`);
  }
  if (id.length > MAX_ID_LENGTH) {
    throw new IsletError('ISLET_ERR_BAD_HANDLER_ID', `handler id is longer than ${MAX_ID_LENGTH} characters`);
  }
  const segments = id.split('/');
  // eslint-disable-next-line no-control-regex
  if (id.startsWith('/') || /[\\\u0000-\u001f]/.test(id) || segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw new IsletError(
      'ISLET_ERR_BAD_HANDLER_ID',
      `handler "${id}" must be a relative module id like "my-project/ws-handler" (no leading "/", "\\", "." or ".." segments)`,
    );
  }
  if (tenant !== undefined && tenantOf(id) !== tenant) {
    throw new IsletError(
      'ISLET_ERR_BAD_HANDLER_ID',
      `handler "${id}" belongs to project "${tenantOf(id)}", not to "${tenant}": a project may only use its own handlers`,
    );
  }
  const candidates: string[] = [];
  if (HANDLER_EXTENSIONS.some((ext) => id.endsWith(ext))) candidates.push(id);
  for (const ext of HANDLER_EXTENSIONS) candidates.push(id + ext);
  const realRoot = realpathSync(root);
  for (const candidate of candidates) {
    const file = path.join(root, candidate);
    if (!existsSync(file) || !statSync(file).isFile()) continue;
    // A symlink must not lead out of the root.
    if (!isInside(realRoot, realpathSync(file))) continue;
    return { id, file, relative: candidate };
  }
  throw new IsletError(
    'ISLET_ERR_HANDLER_NOT_FOUND',
    `handler "${id}" resolves to no file; tried ${candidates.join(', ')} under the projects root`,
  );
}

/**
 * The type of an argument a tenant gave, as the sandbox passed it: objects
 * and functions arrive as `{isletType}` notes, never as themselves.
 */
export function typeName(value: unknown): string {
  if (value === null) return 'null';
  const note = typeof value === 'object' ? (value as { isletType?: unknown }).isletType : undefined;
  return typeof note === 'string' ? note : typeof value;
}

/** A short, safe description of an untrusted value for an error message. */
export function describe(value: unknown): string {
  const type = typeName(value);
  return type === 'null' ? 'null' : /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}
