// Watches the projects root for changes, one folder at a time. Node's own
// recursive watch walks the whole tree: a tenant's folders nested past the
// longest path hang it in that walk, and it follows links to folders outside
// the root. This one watches each folder it finds, to MAX_DEPTH and at most
// MAX_FOLDERS, does not follow links or enter dot-folders and node_modules,
// and looks a folder over again when something in it is added or removed.
import { type Dirent, type FSWatcher, readdirSync, watch } from 'node:fs';
import path from 'node:path';

const MAX_DEPTH = 32;
const MAX_FOLDERS = 4096;

export class TreeWatcher {
  /** Watched folders, relative to the root ('' for the root itself), with their depth. */
  private readonly folders = new Map<string, { watcher: FSWatcher; depth: number }>();
  private closed = false;

  /** `onChange` gets the path, relative to the root with forward slashes, of what changed. */
  constructor(
    private readonly root: string,
    private readonly onChange: (relative: string) => void,
  ) {
    this.add('', 0);
  }

  close(): void {
    this.closed = true;
    for (const { watcher } of this.folders.values()) watcher.close();
    this.folders.clear();
  }

  private add(dir: string, depth: number): void {
    if (this.closed || this.folders.has(dir) || this.folders.size >= MAX_FOLDERS) return;
    let watcher: FSWatcher;
    try {
      watcher = watch(path.join(this.root, dir), (event, name) => {
        if (typeof name !== 'string') return;
        const relative = dir === '' ? name : `${dir}/${name}`;
        // A folder added, removed or renamed here: look this folder over again.
        if (event === 'rename') this.scan(dir, depth);
        this.onChange(relative);
      });
    } catch {
      return; // gone, or a path too long to watch
    }
    watcher.on('error', () => this.remove(dir));
    this.folders.set(dir, { watcher, depth });
    this.scan(dir, depth);
  }

  private remove(dir: string): void {
    for (const [folder, { watcher }] of this.folders) {
      if (folder !== dir && !folder.startsWith(`${dir}/`)) continue;
      watcher.close();
      this.folders.delete(folder);
    }
  }

  /** Watches the subfolders of `dir` not watched yet; forgets those that are gone. */
  private scan(dir: string, depth: number): void {
    let entries: Dirent[];
    try {
      entries = readdirSync(path.join(this.root, dir), { withFileTypes: true });
    } catch {
      if (dir !== '') this.remove(dir);
      return;
    }
    const present = new Set<string>();
    for (const entry of entries) {
      if (!entry.isDirectory() || entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const sub = dir === '' ? entry.name : `${dir}/${entry.name}`;
      present.add(sub);
      if (depth < MAX_DEPTH) this.add(sub, depth + 1);
    }
    for (const folder of this.folders.keys()) {
      if (path.posix.dirname(folder) === (dir === '' ? '.' : dir) && folder !== dir && !present.has(folder)) this.remove(folder);
    }
  }
}
