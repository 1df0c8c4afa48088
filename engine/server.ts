// The HTTP side of serving: answers for upgrades islet refuses, and the
// read-only static pages of projects at /services/web/<project>/<path>
// (Dirigible's path), so a project can ship the page that talks to its
// endpoint.
import { closeSync, createReadStream, realpathSync } from 'node:fs';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { HANDLER_EXTENSIONS, tenantOf } from '../bridge/handler-ids.js';
import { isOwnOpened, openFile } from './files.js';
import { DESCRIPTOR_SUFFIX } from './projects.js';

export const WEB_PREFIX = '/services/web/';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** How long a refused upgrade's peer has to close its end. */
const REFUSED_GRACE_MS = 2000;

/** Answers an upgrade islet will not take with a plain HTTP response, then closes. */
export function refuseUpgrade(socket: Duplex, status: number, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  // An upgrade's socket is paused: it would never see the peer's end, and
  // would stay open (holding up the server's close). Read on to the end and
  // let go of it then, or after a grace period if the peer never closes.
  socket.resume();
  socket.once('end', () => socket.destroy());
  setTimeout(() => socket.destroy(), REFUSED_GRACE_MS).unref();
}

/**
 * The path of a request's target, or null when the target is not a valid
 * URL path (`//x:99999` throws in `new URL`): the caller answers 400.
 */
export function requestPath(req: IncomingMessage): string | null {
  const target = req.url ?? '/';
  if (!target.startsWith('/')) return null;
  try {
    return new URL(target, 'http://islet').pathname;
  } catch {
    return null;
  }
}

export function answer(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`${message}\n`);
}

/**
 * Whether a file is server code, never served: by its path as requested and
 * by its real path (both relative to the root).
 */
export type ServerCodeCheck = (requested: string, real: string) => boolean;

/**
 * Serves a project file for GET/HEAD /services/web/<project>/<path>; returns
 * false for any other path. Refused: paths out of the project (traversal,
 * symlinks), dot-files, descriptors, TypeScript, and server code (`isServerCode`).
 */
/**
 * The `<project>/<path>` that a request under `prefix` names, decoded; or
 * null once it has been answered: 405 (`wrongMethod`) for another method
 * than `methods`, 400 for a bad encoding, 404 (`notFound`) for a path that
 * names no project's file (empty, `.` or `..` segments, backslashes, NUL) or
 * that `refuse` turns down.
 */
export function projectFile(
  req: IncomingMessage,
  res: ServerResponse,
  pathname: string,
  under: { prefix: string; methods: string[]; wrongMethod: string; notFound: string; refuse: (relative: string, segments: string[]) => boolean },
): string | null {
  const { prefix, methods, wrongMethod, notFound, refuse } = under;
  if (!methods.includes(req.method ?? '')) {
    res.setHeader('allow', methods.join(', '));
    answer(res, 405, wrongMethod);
    return null;
  }
  let relative: string;
  try {
    relative = decodeURIComponent(pathname.slice(prefix.length));
  } catch {
    answer(res, 400, 'bad path encoding');
    return null;
  }
  const segments = relative.split('/');
  if (segments.length < 2 || segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('\\') || s.includes('\0')) || refuse(relative, segments)) {
    answer(res, 404, notFound);
    return null;
  }
  return relative;
}

export function serveStatic(root: string, isServerCode: ServerCodeCheck, req: IncomingMessage, res: ServerResponse): boolean {
  const pathname = requestPath(req);
  if (pathname === null || !pathname.startsWith(WEB_PREFIX)) return false;
  // Dot-files are not pages.
  const relative = projectFile(req, res, pathname, {
    prefix: WEB_PREFIX,
    methods: ['GET', 'HEAD'],
    wrongMethod: 'static pages are read-only',
    notFound: 'not found',
    refuse: (_, segments) => segments.some((s) => s.startsWith('.')),
  });
  if (relative === null) return true;
  const ext = path.extname(relative);
  if (relative.endsWith(DESCRIPTOR_SUFFIX) || ext === '.ts' || ext === '.mts') {
    answer(res, 403, 'descriptors and handler sources are not served');
    return true;
  }
  // Opened first, then judged by what was opened: a link swapped in between
  // a check and the open cannot lead outside (engine/files.ts).
  const opened = openFile(path.join(root, relative));
  if (opened === null) {
    answer(res, 404, 'not found');
    return true;
  }
  const { fd, size } = opened;
  const realRoot = realpathSync(root);
  if (!isOwnOpened(realRoot, tenantOf(relative), opened)) {
    closeSync(fd);
    answer(res, 404, 'not found');
    return true;
  }
  if (isServerCode(relative, path.relative(realRoot, opened.real).split(path.sep).join('/'))) {
    closeSync(fd);
    answer(res, 403, 'descriptors and handler sources are not served');
    return true;
  }
  res.writeHead(200, {
    'content-type': TYPES[ext] ?? 'application/octet-stream',
    'content-length': size,
    'x-content-type-options': 'nosniff',
  });
  if (req.method === 'HEAD') {
    closeSync(fd);
    res.end();
    return true;
  }
  // A file that shrinks or cannot be read on the way ends this response only.
  const stream = createReadStream('', { fd, end: Math.max(0, size - 1) });
  stream.on('error', () => res.destroy());
  res.on('close', () => stream.destroy());
  if (size === 0) {
    stream.destroy();
    res.end();
  } else {
    stream.pipe(res);
  }
  return true;
}

/** Whether a root-relative file is the module of one of these handler ids. */
export function handlerFileMatcher(handlers: Iterable<string>): (relative: string) => boolean {
  const files = new Set<string>();
  for (const id of handlers) {
    files.add(id);
    for (const ext of HANDLER_EXTENSIONS) files.add(id + ext);
  }
  return (relative) => files.has(relative);
}
