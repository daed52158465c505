/**
 * The page's end of the Sandglass guest agent (scripts/debian-root/src/sandglass-agent.c, where
 * the protocol and the reasons for it are described): requests go out on the machine's second
 * serial port (COM2: `hardware.serial1`, v86's uart1) and answers come back on it; a file's bytes
 * travel through the shared folder (v86's 9p device, /shared in the guest), which the agent
 * empties again. The person's own serial console (COM1) is never touched. Knows nothing of
 * storage or the UI.
 */

/** The parts of v86 used here. */
export interface AgentHost {
  serial_send_bytes(port: number, data: Uint8Array): void;
  add_listener(event: "serial1-output-byte", listener: (byte: number) => void): void;
  create_file(path: string, data: Uint8Array): Promise<void>;
  fs9p?: { DeleteNode?(path: string): void } | null;
}

/** What the file gets besides its bytes (as stat says at the point it comes from). */
export interface RestoreMeta {
  /** Permission bits (07777 of st_mode). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

/** The agent's answer to a restore: SHA-256 (hex) and length of what it wrote. */
export interface Restored {
  sha256: string;
  bytes: number;
}

/** The agent said no (its message), or did not answer in time. */
export class AgentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentError";
  }
}

/** Where the shared folder is mounted in the guest (scripts/debian-root/files/etc/sandglass/boot). */
export const GUEST_SHARED = "/shared";
/** How long the agent gets to answer a ping. */
const PING_MS = 2000;
/** Pings sent before giving up (the first may arrive while the agent is being started again). */
const PING_TRIES = 3;
/** A restore's time to answer: a base, plus time per MiB (the emulated CPU copies and hashes it). */
const RESTORE_MS = 30_000;
const RESTORE_MS_PER_MIB = 2_000;
/** Longest answer line kept (anything longer is not the agent's). */
const MAX_LINE = 4096;

const hex = (text: string) => Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");

export class GuestAgent {
  private next = 1;
  private readonly waiting = new Map<number, { done: (words: string[]) => void; fail: (err: Error) => void }>();
  private line = "";

  constructor(private readonly host: AgentHost) {
    host.add_listener("serial1-output-byte", (byte) => this.received(byte));
  }

  private received(byte: number): void {
    if (byte !== 10) {
      if (this.line.length < MAX_LINE) this.line += String.fromCharCode(byte);
      return;
    }
    const words = this.line.replace(/\r$/, "").split(" ");
    this.line = "";
    if (words[0] !== "SGA1") return;
    const pending = this.waiting.get(Number(words[1]));
    if (!pending) return; // an answer to a request given up on (or from before a rewind)
    this.waiting.delete(Number(words[1]));
    if (words[2] === "ok") pending.done(words.slice(3));
    else pending.fail(new AgentError(words.slice(3).join(" ") || "the guest agent refused the request"));
  }

  private request(words: string, timeoutMs: number): Promise<string[]> {
    const id = this.next++;
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new AgentError(`the guest agent did not answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      this.waiting.set(id, {
        done: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      this.host.serial_send_bytes(1, new TextEncoder().encode(`SGA1 ${id} ${words}\n`));
    });
  }

  /** True when the agent answers (a machine whose guest does not run it never does). */
  async ping(): Promise<boolean> {
    for (let i = 0; i < PING_TRIES; i++) {
      try {
        await this.request("ping", PING_MS);
        return true;
      } catch {
        // no answer yet: ask again
      }
    }
    return false;
  }

  /**
   * Puts `data` at `target` in the running guest, atomically, with the given mode, owner and
   * time (see the agent's source). Throws AgentError with the agent's reason, or if the bytes it
   * wrote are not the bytes sent.
   */
  async restoreFile(target: string, data: Uint8Array, meta: RestoreMeta): Promise<Restored> {
    const host = this.host;
    if (!host.fs9p) throw new AgentError("this machine has no shared folder to hand the file over");
    const staged = `/.sandglass-restore-${crypto.randomUUID()}`;
    await host.create_file(staged, data);
    try {
      const words = `file ${hex(GUEST_SHARED + staged)} ${hex(target)} ${(meta.mode & 0o7777).toString(8)} ${meta.uid} ${meta.gid} ${Math.floor(meta.mtime)}`;
      const answer = await this.request(words, RESTORE_MS + (RESTORE_MS_PER_MIB * data.byteLength) / 2 ** 20);
      return await checked(answer, data);
    } finally {
      // The agent deletes it; after a failure on the way it may still be there.
      try {
        host.fs9p?.DeleteNode?.(staged);
      } catch {
        // already gone
      }
    }
  }

  /** Makes `target` a symbolic link to `link` in the running guest (atomically, like a file). */
  async restoreSymlink(target: string, link: string, meta: Omit<RestoreMeta, "mode">): Promise<Restored> {
    const answer = await this.request(`symlink ${hex(link)} ${hex(target)} ${meta.uid} ${meta.gid} ${Math.floor(meta.mtime)}`, RESTORE_MS);
    return checked(answer, new TextEncoder().encode(link));
  }
}

/** The agent's "ok <sha256> <bytes>", checked against what was sent. */
async function checked(answer: string[], sent: Uint8Array): Promise<Restored> {
  const [sha256 = "", bytes = ""] = answer;
  const expected = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", sent as Uint8Array<ArrayBuffer>)), (b) => b.toString(16).padStart(2, "0")).join("");
  if (sha256 !== expected || Number(bytes) !== sent.byteLength) {
    throw new AgentError(`the guest wrote something else than was sent (SHA-256 ${sha256.slice(0, 12)}…, ${bytes} bytes)`);
  }
  return { sha256, bytes: Number(bytes) };
}
