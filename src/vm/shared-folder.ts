/**
 * Files in and out of the guest through v86's 9p shared folder (mounted at /shared in the
 * Debian guest). The folder lives in v86's memory and is part of every saved state, so what is
 * put in follows checkpoints, rewinds and share links like the rest of the machine. Knows
 * nothing of storage or the UI.
 */

/** Most bytes the shared folder may hold: its files are in page memory and in every checkpoint. */
export const SHARED_FOLDER_LIMIT = 64 * 1024 * 1024;

/** The parts of v86's 9p file system (lib/filesystem.js) used here. */
export interface V86FileSystem {
  read_dir(path: string): string[] | undefined;
  SearchPath(path: string): { id: number };
  GetInode(id: number): { size: number; mode: number; mtime: number };
}

export interface SharedFolderHost {
  fs9p?: V86FileSystem | null;
  create_file(path: string, data: Uint8Array): Promise<void>;
  read_file(path: string): Promise<Uint8Array>;
}

export interface SharedFile {
  /** Path inside the folder, with a leading "/" ("/notes/a.txt" is /shared/notes/a.txt). */
  path: string;
  size: number;
  /** Last change, ms since the epoch. */
  mtime: number;
}

export interface IncomingFile {
  name: string;
  data: Uint8Array;
}

export class SharedFolderFullError extends Error {
  constructor(needed: number, free: number) {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    super(
      `Not added: the shared folder holds at most ${mib(SHARED_FOLDER_LIMIT)} (its files are part of every checkpoint); ` +
        `these files need ${mib(needed)} and ${mib(free)} is free. Nothing was written.`,
    );
    this.name = "SharedFolderFullError";
  }
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** How deep the listing goes into sub-folders. */
const MAX_DEPTH = 4;

export class SharedFolder {
  constructor(private readonly host: SharedFolderHost) {}

  get available(): boolean {
    return !!this.host.fs9p;
  }

  /** Every regular file, folders first walked in name order. */
  list(): SharedFile[] {
    const fs = this.host.fs9p;
    if (!fs) return [];
    const files: SharedFile[] = [];
    const walk = (dir: string, depth: number) => {
      for (const name of (fs.read_dir(dir) ?? []).sort()) {
        // A file on its way to the guest agent (guest-agent.ts): not the person's.
        if (dir === "/" && name.startsWith(".sandglass-restore-")) continue;
        const path = `${dir === "/" ? "" : dir}/${name}`;
        const { id } = fs.SearchPath(path);
        if (id === -1) continue;
        const inode = fs.GetInode(id);
        const type = inode.mode & S_IFMT;
        if (type === S_IFDIR && depth < MAX_DEPTH) walk(path, depth + 1);
        else if (type === S_IFREG) files.push({ path, size: inode.size, mtime: inode.mtime * 1000 });
      }
    };
    walk("/", 0);
    return files;
  }

  usedBytes(): number {
    return this.list().reduce((n, f) => n + f.size, 0);
  }

  /**
   * Puts files at the top of the folder; a name already there gets a numbered one. Checks the
   * whole batch against the limit first, so it is written entirely or not at all.
   */
  async put(files: IncomingFile[]): Promise<string[]> {
    if (!this.host.fs9p) throw new Error("This machine has no shared folder.");
    this.ensureRoom(files.reduce((n, f) => n + f.data.byteLength, 0));
    const taken = new Set(this.host.fs9p.read_dir("/") ?? []);
    const written: string[] = [];
    for (const file of files) {
      const name = freeName(safeName(file.name), taken);
      taken.add(name);
      await this.host.create_file(`/${name}`, file.data);
      written.push(`/${name}`);
    }
    return written;
  }

  /** Throws SharedFolderFullError unless `needed` more bytes fit (checked before reading any file). */
  ensureRoom(needed: number): void {
    const free = SHARED_FOLDER_LIMIT - this.usedBytes();
    if (needed > free) throw new SharedFolderFullError(needed, Math.max(0, free));
  }

  read(path: string): Promise<Uint8Array> {
    return this.host.read_file(path);
  }
}

/** A file name the guest can use: no path separators, no control characters. */
function safeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  const cleaned = name.replace(/[/\\\x00-\x1f]/g, "_").replace(/^\.+$/, "_").slice(0, 200);
  return cleaned || "file";
}

function freeName(name: string, taken: Set<string>): string {
  if (!taken.has(name)) return name;
  const dot = name.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
  for (let n = 1; ; n++) if (!taken.has(`${stem} (${n})${ext}`)) return `${stem} (${n})${ext}`;
}
