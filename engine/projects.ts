// The projects root as the endpoint server sees it: every `*.websocket`
// descriptor, validated. A bad descriptor is reported with its file and
// field, and every other endpoint is still served.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { IsletError } from '../bridge/errors.js';
import { checkEngine, resolveHandler, tenantOf } from '../bridge/handler-ids.js';

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

/** Descriptor files under `root`, relative, sorted; dot-folders and node_modules are skipped. */
function descriptorFiles(root: string, dir = ''): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
    if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
    const relative = dir === '' ? entry.name : `${dir}/${entry.name}`;
    if (entry.isDirectory()) found.push(...descriptorFiles(root, relative));
    else if (entry.isFile() && entry.name.endsWith(DESCRIPTOR_SUFFIX)) found.push(relative);
  }
  return found.sort();
}

function problem(file: string, field: string | null, detail: string): DescriptorProblem {
  const where = field === null ? file : `${file}: field "${field}"`;
  return { file, field, error: new IsletError('ISLET_ERR_DESCRIPTOR', `${where}: ${detail}`) };
}

function readDescriptor(root: string, file: string, taken: Map<string, Endpoint>): Endpoint | DescriptorProblem {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path.join(root, file), 'utf8'));
  } catch (error) {
    return problem(file, null, `not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return problem(file, null, 'must be a JSON object like {"handler": "my-project/ws-handler", "endpoint": "my-endpoint"}');
  }
  const fields = parsed as Record<string, unknown>;
  const project = tenantOf(file);
  const { endpoint, handler, description, engine } = fields;
  if (typeof endpoint !== 'string' || endpoint === '') return problem(file, 'endpoint', 'is required, a non-empty string');
  if (!ENDPOINT_NAME.test(endpoint)) {
    return problem(file, 'endpoint', `"${endpoint.slice(0, 200)}" may only use letters, digits, ".", "_" and "-" (at most 128)`);
  }
  const other = taken.get(endpoint);
  if (other !== undefined) return problem(file, 'endpoint', `"${endpoint}" is already served by ${other.file}`);
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
  return { name: endpoint, path: SERVICE_PREFIX + endpoint, project, handler: handlerId, description: description ?? '', engine: engineName, file };
}

/** Reads and validates every descriptor under the root. */
export function scanProjects(root: string): ProjectsScan {
  const endpoints = new Map<string, Endpoint>();
  const problems: DescriptorProblem[] = [];
  for (const file of descriptorFiles(root)) {
    const result = readDescriptor(root, file, endpoints);
    if ('error' in result) problems.push(result);
    else endpoints.set(result.name, result);
  }
  return { endpoints, problems };
}
