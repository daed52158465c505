/**
 * The guest's half of the crash tests: commands sent to the serial console through the page's
 * session (what the terminal calls) and answers read from the serial output itself, kept in the
 * page by a listener this file installs after each load.
 *
 * Files: each step writes /root/crash/<step>.dat, whose content is derived from the step number
 * (`yes s<step>`, cut to a size that also depends on it), then its checksum beside it,
 * <step>.md5, as this file computes it from the same derivation (so it says what the file must
 * hold, not what the guest happened to write), to a temporary name renamed after the data is
 * synced: a checksum file is whole or absent whenever a checkpoint catches the guest. The check command lists the checksum files, a digest
 * of their contents (what a checkpoint must give back exactly) and whether every file still has
 * its checksum (`md5sum -c`), after dropping the guest's page cache so that the files are read
 * from the disk as the checkpoint left it.
 */
import { expect, test, type Page } from "@playwright/test";
import { createHash } from "node:crypto";

/** What the check command reports about /root/crash. */
export interface FileCheck {
  /** Checksum files present, in `ls` order ("" when none). */
  list: string;
  /** MD5 of the checksum files' contents in that order ("none" when there are none). */
  digest: string;
  /** Every file matches its checksum. */
  good: boolean;
}

type SerialWindow = {
  crashSerial: string;
  sandglass: { sendSerial(text: string): void; onSerial(l: (b: Uint8Array) => void, c: (banner?: string) => void): () => void };
};

let counter = 1000;

/** Starts keeping the guest's serial output in the page (again after every page load). */
export async function captureSerial(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as unknown as { sandglass?: unknown }).sandglass, null, { timeout: 120_000 });
  await page.evaluate(() => {
    const w = window as unknown as SerialWindow & { crashSerialOn?: boolean };
    if (w.crashSerialOn) return;
    w.crashSerialOn = true;
    w.crashSerial = "";
    const decoder = new TextDecoder();
    w.sandglass.onSerial(
      (bytes) => {
        // Only the tail matters: answers are waited for right after their command.
        w.crashSerial = (w.crashSerial + decoder.decode(bytes, { stream: true })).slice(-200_000);
      },
      // The page clears its terminal with a banner after a rewind ("rewound to …"): kept as a line.
      (banner) => (w.crashSerial += `\n[banner] ${banner ?? ""}\n`),
    );
  });
}

/** Sends a line to the guest's shell. */
export async function send(page: Page, line: string): Promise<void> {
  await page.evaluate((text) => (window as unknown as SerialWindow).sandglass.sendSerial(text), line);
}

/** Waits until the serial output (since it was last cleared) matches; returns the match. */
export async function waitFor(page: Page, pattern: RegExp, timeout = 120_000): Promise<RegExpMatchArray> {
  const handle = await page.waitForFunction(
    ({ source, flags }) => {
      const m = new RegExp(source, flags).exec((window as unknown as SerialWindow).crashSerial);
      return m ? [...m] : null;
    },
    { source: pattern.source, flags: pattern.flags },
    { timeout, polling: 100 },
  );
  return (await handle.jsonValue()) as RegExpMatchArray;
}

/** Empties the kept output, so that later waits see only what comes next. */
export async function clearSerial(page: Page): Promise<void> {
  await page.evaluate(() => ((window as unknown as SerialWindow).crashSerial = ""));
}

/**
 * Runs a command and waits for the marker it ends with (written as `$((n+0))` so that the echo of
 * the typed line cannot match it), which carries the command's exit status. Returns the output's
 * match of `answer` (or of the marker); throws if `answer` is not given and the status is not 0.
 */
export async function shell(page: Page, command: string, answer?: RegExp, timeout = 180_000): Promise<RegExpMatchArray> {
  const n = ++counter;
  await clearSerial(page);
  await send(page, `${command}; echo "done-$((${n}+0)) rc=$?"\n`);
  if (answer) return waitFor(page, new RegExp(`${answer.source}[\\s\\S]*done-${n} rc=\\d+`), timeout);
  const m = await waitFor(page, new RegExp(`done-${n} rc=(\\d+)`), timeout);
  if (m[1] !== "0") throw new Error(`the guest's command failed (exit ${m[1]}): ${command}`);
  return m;
}

/**
 * Waits until the shell answers (after a resume, a rewind, a reopen): Ctrl-C ends whatever the
 * checkpoint caught the guest doing (a `dd` would run to its end otherwise), then an `echo` of a
 * computed marker, again every few seconds (keys sent before the guest's shell reads them are lost).
 * Each try captures the serial output again, in case the page reloaded meanwhile.
 */
export async function waitForShell(page: Page, timeout = 180_000): Promise<void> {
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "running", { timeout });
  const n = ++counter;
  await clearSerial(page);
  await send(page, "\x03");
  try {
    await expect(async () => {
      await captureSerial(page);
      await send(page, `echo ready-$((${n}+0))\n`);
      await waitFor(page, new RegExp(`ready-${n}\\b`), 5_000);
    }).toPass({ timeout, intervals: [0] });
  } catch (err) {
    const state = await page
      .evaluate(() => {
        const w = window as unknown as SerialWindow & { sandglass: { status: string; error: string | null } };
        return `status ${w.sandglass.status}, error ${w.sandglass.error}, url ${location.href}, serial: ${(w.crashSerial ?? "").slice(-1500)}`;
      })
      .catch((e: unknown) => String(e));
    // What the emulator's devices and the disk adapter were waiting for, to tell a lost disk
    // request (IDE busy, a read never answered) from a lost serial interrupt (PIC, UART).
    const devices = await page
      .evaluate(async () => {
        type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
        const debug = (window as unknown as { sandglass: { debug: { emulator?: Any; disk?: Any } } }).sandglass.debug;
        // Whether the guest's CPU executes at all: instructions run over one second.
        const counted = () => Number(debug.emulator?.get_instruction_counter?.() ?? NaN);
        const before = counted();
        await new Promise((r) => setTimeout(r, 1000));
        const instructionsPerSecond = counted() - before;
        const cpu = debug.emulator?.v86?.cpu as Any | undefined;
        const ide = cpu?.devices?.ide?.primary as Any | undefined;
        const uart = cpu?.devices?.uart0 as Any | undefined;
        const disk = debug.disk;
        return JSON.stringify({
          ide: ide && { status: ide.master?.status_reg, error: ide.master?.error_reg, command: ide.master?.current_command, inProgress: ide.master?.in_progress_io_ids?.size, dma: ide.dma_status },
          uart: uart && { ier: uart.ier, iir: uart.iir, lsr: uart.lsr, ints: uart.ints, input: uart.input?.length },
          pic: cpu?.get_state_pic?.().slice(0, 5),
          inHlt: cpu?.in_hlt?.[0],
          instructionsPerSecond,
          running: debug.emulator?.is_running?.(),
          adapter: disk && { ...disk.counters, readsInFlight: disk.readsInFlight, inflight: disk.inflight?.size, generation: disk.generation },
        });
      })
      .catch((e: unknown) => String(e));
    // The screen shows the guest's VGA console (kernel messages: a hung task, a disk error).
    let shot = "none";
    try {
      shot = test.info().outputPath(`no-answer-${Date.now()}.png`);
      await page.screenshot({ path: shot, fullPage: true });
    } catch {
      // No test running (a script) or no page left: the error below is what matters.
    }
    throw new Error(`the guest's shell does not answer (screen: ${shot}): ${state}; devices: ${devices}`, { cause: err });
  }
}

/** The size of step `k`'s file: 4 to 64 KiB, depending on the step (`yes` is slow in the guest). */
export const stepBytes = (k: number) => 4096 * (1 + ((k * 7) % 16));

/** What `yes <word> | head -c <bytes>` writes. */
function yesBytes(word: string, bytes: number): Buffer {
  const line = `${word}\n`;
  return Buffer.from(line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes));
}

const md5 = (data: Buffer) => createHash("md5").update(data).digest("hex");

/** Writes step `k`'s file, syncs, then its checksum; syncs. */
export function stepCommand(k: number): string {
  const sum = md5(yesBytes(`s${k}`, stepBytes(k)));
  return (
    `mkdir -p /root/crash && (cd /root/crash && yes s${k} | head -c ${stepBytes(k)} > ${k}.dat && sync && ` +
    `echo "${sum}  ${k}.dat" > ${k}.tmp && mv ${k}.tmp ${k}.md5 && sync)`
  );
}

/**
 * Writes `size` MiB (64 by default) with dd (conv=fsync), then its checksum; syncs. The content
 * comes from the step number: 1 MiB of `yes d<step>` (made once: `yes` costs the emulated CPU far
 * more per byte than `cat`), `size` times.
 */
export function ddCommand(k: number, size = 64): string {
  const mib = yesBytes(`d${k}`, 1 << 20);
  const sum = md5(Buffer.concat(Array.from({ length: size }, () => mib)));
  return (
    `mkdir -p /root/crash && (cd /root/crash && rm -f big.md5 big && yes d${k} | head -c 1048576 > /tmp/pattern && ` +
    `for i in $(seq ${size}); do cat /tmp/pattern; done | dd of=big bs=1M count=${size} iflag=fullblock conv=fsync 2>/dev/null && ` +
    `echo "${sum}  big" > big.tmp && mv big.tmp big.md5 && sync)`
  );
}

/**
 * Reads the files of /root/crash back from the disk and checks them (see FileCheck). The dd
 * file is read only when `big` (its checksum file is in the digest either way): reading it back
 * takes the emulated CPU several seconds.
 */
export async function checkFiles(page: Page, big = false, timeout?: number): Promise<FileCheck> {
  const command =
    "echo 3 > /proc/sys/vm/drop_caches; " +
    'if cd /root/crash 2>/dev/null && L=$(ls *.md5 2>/dev/null | tr "\\n" " ") && [ -n "$L" ]; then ' +
    `D=$(cat $L | md5sum | cut -c1-32); C=$(ls [0-9]*.md5 2>/dev/null | tr "\\n" " "); ${big ? 'C="$C $(ls big.md5 2>/dev/null)"; ' : ""}` +
    'if [ -z "$(echo $C)" ] || cat $C | md5sum -c -s; then G=good; else G=BAD; fi; ' +
    'else L=""; D=none; G=good; fi; cd /; echo "files: $D $G [$L]"';
  const m = await shell(page, command, /files: ([0-9a-f]{32}|none) (good|BAD) \[([^\]]*)\]/, timeout);
  return { digest: m[1]!, good: m[2] === "good", list: m[3]!.trim() };
}
