// Files under the projects root, which are hostile: a link may be swapped in
// between a check of a path and its open, a FIFO may block an open, a file
// may be gigabytes. A file is opened first (without blocking) and judged by
// what was opened: its real path as the open descriptor names it, its type
// and its size.
import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync, realpathSync } from 'node:fs';

export interface OpenedFile {
  fd: number;
  /** The real path of what was opened. */
  real: string;
  isFile: boolean;
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
    return { fd, real: openedPath(fd, file), isFile: stat.isFile(), size: stat.size };
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
