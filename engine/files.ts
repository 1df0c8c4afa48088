// Files under the projects root, which are hostile: a link may be swapped in
// between a check of a path and its open, a FIFO may block an open, a file
// may be gigabytes. A file is opened first (without blocking) and judged by
// what was opened: its real path as the open descriptor names it, its type
// and its size. Whether a file is a project's own is decided on its real
// path (links followed).
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { isInside, tenantOf } from '../bridge/handler-ids.js';

export interface OpenedFile {
  fd: number;
  /** The real path of what was opened. */
  real: string;
  isFile: boolean;
  /** Names the file has: a hard link's other names may lie anywhere, in another project or out of the root. */
  links: number;
  size: number;
}

/** Opens `file` for reading; null when it cannot be opened. The caller closes `fd`. */
export function openFile(file: string): OpenedFile | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const stat = fstatSync(fd);
    return { fd, real: openedPath(fd, file), isFile: stat.isFile(), links: stat.nlink, size: stat.size };
  } catch {
    closeSync(fd);
    return null;
  }
}

/** The real path of what `fd` has open (Linux names it under /proc); elsewhere, where `file` leads now. */
function openedPath(fd: number, file: string): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return realpathSync(file);
  }
}

/** Reads an opened file whole (at most `size` bytes, what it had when opened) and closes it. */
export function readOpened(opened: OpenedFile): Buffer {
  try {
    const data = Buffer.allocUnsafe(opened.size);
    let filled = 0;
    while (filled < opened.size) {
      const n = readSync(opened.fd, data, filled, opened.size - filled, filled);
      if (n === 0) break;
      filled += n;
    }
    return data.subarray(0, filled);
  } finally {
    closeSync(opened.fd);
  }
}

export const OUTSIDE = Symbol('outside the project');

/** A real path, relative to the root, when it is a file of `project`; null when it lies elsewhere. */
export function ownRelative(realRoot: string, project: string, real: string): string | null {
  const own = path.relative(realRoot, real).split(path.sep).join('/');
  return isInside(realRoot, real) && tenantOf(own) === project ? own : null;
}

/**
 * Where `relative` (root-relative) really is, root-relative, when it is a
 * file of `project`; OUTSIDE when it exists but really lies elsewhere (a
 * link); null when there is no such file.
 */
export function ownFile(realRoot: string, project: string, relative: string): string | typeof OUTSIDE | null {
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

/**
 * Whether an opened file is a file of `project`: a regular file whose real
 * path lies in the project, and with no other name (a hard link to another
 * project's file, or to /etc/passwd, has a real path inside the project).
 */
export function isOwnOpened(realRoot: string, project: string, opened: OpenedFile): boolean {
  return opened.isFile && opened.links === 1 && ownRelative(realRoot, project, opened.real) !== null;
}

/** Why a file is refused as a project's: one wording for every place that judges it. */
export function notOwnFile(relative: string, project: string): string {
  return `${relative} is not a file of project "${project}" (a link to another project's file or out of the root, or a hard link)`;
}
