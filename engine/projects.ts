// The projects root as the endpoint server sees it: every `*.websocket`
// descriptor, validated. A bad descriptor is reported with its file and
// field, and every other endpoint is still served.
import { closeSync, type Dirent, readdirSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { IsletError } from '../bridge/errors.js';
import { checkEngine, resolveHandler, tenantOf } from '../bridge/handler-ids.js';
import { openFile, readOpened } from './files.js';

export const DESCRIPTOR_SUFFIX = '.websocket';
const ENDPOINT_NAME = /^[A-Za-z0-9._-]{1,128}$/;

/** Where endpoints are served: SERVICE_PREFIX + name. */
export const SERVICE_PREFIX = '/websockets/v4/service/';

export interface Endpoint {
  /** Unique across all projects. */
  name: string;
  /** The path it is served at: /websockets/v4/service/<name>. */
  path: string;
  project: string;
  /** Handler module id, inside the project. */
  handler: string;
  description: string;
  engine: string;
  /** The descriptor says `"public": true`: `islet serve`'s JWT check lets anyone in. */
  public: boolean;
  /** The descriptor, relative to the root. */
  file: string;
}

export interface DescriptorProblem {
  /** The descriptor, relative to the root. */
  file: string;
  /** The field at fault, or null when the file as a whole is. */
  field: string | null;
  error: IsletError;
}

export interface ProjectsScan {
  endpoints: Map<string, Endpoint>;
  problems: DescriptorProblem[];
}

/** How deep under the root descriptors are looked for, and how large one may be. */
const MAX_DEPTH = 32;
const MAX_DESCRIPTOR_BYTES = 64 * 1024;

/**
 * Descriptor files under `root`, relative, sorted; dot-folders, node_modules
 * and links are not followed, nor folders deeper than MAX_DEPTH, and a
 * folder that cannot be read (gone, too long a path) is passed over: the
 * root is tenants' ground, and nothing in it may stop the scan.
 */
function descriptorFiles(root: string): string[] {
  const found: string[] = [];
  const folders: [relative: string, depth: number][] = [['', 0]];
  while (folders.length > 0) {
    const [dir, depth] = folders.pop()!;
    let entries: Dirent[];
    try {
      entries = readdirSync(path.join(root, dir), { withFileTypes: true });
    } catch {
      continue;
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const relative = dir === '' ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory() && depth < MAX_DEPTH) folders.push([relative, depth + 1]);
      else if (entry.isFile() && entry.name.endsWith(DESCRIPTOR_SUFFIX)) found.push(relative);
    }
  }
  return found.sort();
}

function problem(file: string, field: string | null, detail: string): DescriptorProblem {
  const where = field === null ? file : `${file}: field "${field}"`;
  return { file, field, error: new IsletError('ISLET_ERR_DESCRIPTOR', `${where}: ${detail}`) };
}

function readDescriptor(root: string, file: string): Endpoint | DescriptorProblem {
  const opened = openFile(path.join(root, file));
  if (opened === null) return problem(file, null, 'cannot be read');
  const real = path.relative(realpathSync(root), opened.real).split(path.sep).join('/');
  if (!opened.isFile || real.startsWith('../') || tenantOf(real) !== tenantOf(file)) {
    closeSync(opened.fd);
    return problem(file, null, 'is not a file of its project');
  }
  if (opened.size > MAX_DESCRIPTOR_BYTES) {
    closeSync(opened.fd);
    return problem(file, null, `is ${opened.size} bytes; a descriptor may be at most ${MAX_DESCRIPTOR_BYTES}`);
  }
  let parsed: unknown;
  try {
    // Editors on Windows (and Dirigible's own exports) may start the file with a UTF-8 byte-order mark.
    parsed = JSON.parse(readOpened(opened).toString('utf8').replace(/^\uFEFF/, ''));
  } catch (error) {
    return problem(file, null, `not valid JSON (${(error as Error).message.slice(0, 200)})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return problem(file, null, 'must be a JSON object like {"handler": "my-project/ws-handler", "endpoint": "my-endpoint"}');
  }
  const fields = parsed as Record<string, unknown>;
  const project = tenantOf(file);
  const { endpoint, handler, description, engine, public: isPublic } = fields;
  if (typeof endpoint !== 'string' || endpoint === '') return problem(file, 'endpoint', 'is required, a non-empty string');
  if (!ENDPOINT_NAME.test(endpoint)) {
    return problem(file, 'endpoint', `"${endpoint.slice(0, 200)}" may only use letters, digits, ".", "_" and "-" (at most 128)`);
  }
  if (handler === undefined) return problem(file, 'handler', 'is required, a handler module id like "my-project/ws-handler"');
  let handlerId: string;
  let engineName: string;
  try {
    handlerId = resolveHandler(root, handler, project).id;
  } catch (error) {
    return problem(file, 'handler', (error as Error).message);
  }
  try {
    engineName = checkEngine(engine);
  } catch (error) {
    return problem(file, 'engine', (error as Error).message);
  }
  if (description !== undefined && typeof description !== 'string') return problem(file, 'description', 'must be a string');
  if (isPublic !== undefined && typeof isPublic !== 'boolean') return problem(file, 'public', 'must be true or false');
  return { name: endpoint, path: SERVICE_PREFIX + endpoint, project, handler: handlerId, description: description ?? '', engine: engineName, public: isPublic === true, file };
}

/**
 * Reads and validates every descriptor under the root. An endpoint name is
 * unique across projects; when descriptors claim the same name, the first
 * in path order wins within a project, but between projects the one that
 * `served` already has keeps it (a project cannot take over another's
 * endpoint by adding a descriptor that sorts first), and a name that no
 * project had is served by none of them until only one claims it.
 */
export function scanProjects(root: string, served: ReadonlyMap<string, Endpoint> = new Map()): ProjectsScan {
  const endpoints = new Map<string, Endpoint>();
  const problems: DescriptorProblem[] = [];
  const claims = new Map<string, Endpoint[]>();
  for (const file of descriptorFiles(root)) {
    const result = readDescriptor(root, file);
    if ('error' in result) {
      problems.push(result);
      continue;
    }
    const list = claims.get(result.name);
    if (list === undefined) claims.set(result.name, [result]);
    else list.push(result);
  }
  for (const [name, list] of claims) {
    const projects = new Set(list.map((e) => e.project));
    const keeper = projects.size === 1 ? list[0]! : list.find((e) => e.project === served.get(name)?.project);
    if (keeper !== undefined) endpoints.set(name, keeper);
    for (const claim of list) {
      if (claim === keeper) continue;
      const why =
        keeper !== undefined
          ? `"${name}" is already served by ${keeper.file}`
          : `"${name}" is claimed by ${list.map((e) => e.file).join(' and ')}, of different projects; none of them is served until one gives it up`;
      problems.push(problem(claim.file, 'endpoint', why));
    }
  }
  problems.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return { endpoints, problems };
}
