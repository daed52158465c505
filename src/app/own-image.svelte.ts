/**
 * The page's side of bringing your own image: what the import dialog shows (the file as detected,
 * the settings, progress) and its actions. The worker does the work (engine/image-import.ts);
 * a finished import opens its new machine.
 */
import { proxy } from "comlink";
import type { DiskApi } from "../bridge/disk-bridge.ts";
import type { DetectedImage } from "../engine/image-detect.ts";
import type { ImportProgress, ImportSettings } from "../engine/image-import.ts";
import { describe } from "./format.ts";
import { machineHash } from "./route.ts";

/** File names taken for disk images when dropped (anything else dropped goes to /shared). */
export const IMAGE_EXTENSIONS = [".iso", ".img", ".ima", ".flp", ".vfd", ".raw", ".dsk", ".hdd", ".bin", ".gz", ".xz"];

export const isImageName = (name: string) => IMAGE_EXTENSIONS.some((e) => name.toLowerCase().endsWith(e));

/** What the person chose: a file, or a URL (read a block at a time, nothing copied up front). */
export interface ChosenImage {
  name: string;
  size: number;
  url: string | null;
}

export class OwnImageImport {
  /** "settings": the file is detected, the person chooses; "importing": progress is shown. */
  phase = $state<"closed" | "settings" | "importing">("closed");
  chosen = $state<ChosenImage | null>(null);
  detected = $state<DetectedImage | null>(null);
  progress = $state<ImportProgress | null>(null);
  /** Why the last file could not be imported (shown by the page until the next try). */
  error = $state<string | null>(null);

  private file: File | null = null;

  constructor(private readonly api: DiskApi) {}

  /** Looks at a file; a file that is no image is refused here, with nothing stored. */
  async choose(file: File): Promise<void> {
    this.error = null;
    try {
      this.detected = await this.api.inspectImage(file);
      this.file = file;
      this.chosen = { name: file.name, size: file.size, url: null };
      this.progress = null;
      this.phase = "settings";
    } catch (err) {
      this.phase = "closed";
      this.error = describe(err);
    }
  }

  /** Looks at the image at a URL (one Range request); refused with the cause, nothing stored. */
  async chooseUrl(url: string): Promise<void> {
    this.error = null;
    try {
      const found = await this.api.inspectUrl(url);
      this.detected = found.detected;
      this.file = null;
      this.chosen = { name: found.fileName, size: found.size, url: found.url };
      this.progress = null;
      this.phase = "settings";
    } catch (err) {
      this.phase = "closed";
      this.error = describe(err);
    }
  }

  /** Imports the chosen file (or opens the URL) with `settings`, then opens the new machine (the page reloads). */
  async start(settings: ImportSettings): Promise<void> {
    const url = this.chosen?.url;
    if (url && this.phase === "settings") {
      this.phase = "importing";
      try {
        location.hash = machineHash(await this.api.importUrl(url, settings));
      } catch (err) {
        this.phase = "closed";
        this.error = describe(err);
      }
      return;
    }
    const file = this.file;
    if (!file || this.phase !== "settings") return;
    this.phase = "importing";
    this.progress = { doneBytes: 0, totalBytes: file.size, storedBytes: 0, elapsedMs: 0 };
    try {
      const id = await this.api.importImage(
        file,
        settings,
        proxy((p: ImportProgress) => (this.progress = p)),
      );
      location.hash = machineHash(id);
    } catch (err) {
      this.phase = "closed";
      this.error = describe(err);
    }
  }

  cancel(): void {
    if (this.phase === "importing") void this.api.cancelImport();
    else this.phase = "closed";
  }
}
