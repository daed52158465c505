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
export const IMAGE_EXTENSIONS = [".iso", ".img", ".ima", ".flp", ".vfd", ".raw", ".dsk", ".hdd", ".bin", ".gz"];

export const isImageName = (name: string) => IMAGE_EXTENSIONS.some((e) => name.toLowerCase().endsWith(e));

export class OwnImageImport {
  /** "settings": the file is detected, the person chooses; "importing": progress is shown. */
  phase = $state<"closed" | "settings" | "importing">("closed");
  file = $state<File | null>(null);
  detected = $state<DetectedImage | null>(null);
  progress = $state<ImportProgress | null>(null);
  /** Why the last file could not be imported (shown by the page until the next try). */
  error = $state<string | null>(null);

  constructor(private readonly api: DiskApi) {}

  /** Looks at a file; a file that is no image is refused here, with nothing stored. */
  async choose(file: File): Promise<void> {
    this.error = null;
    try {
      this.detected = await this.api.inspectImage(file);
      this.file = file;
      this.progress = null;
      this.phase = "settings";
    } catch (err) {
      this.phase = "closed";
      this.error = describe(err);
    }
  }

  /** Imports the chosen file with `settings`, then opens the new machine (the page reloads). */
  async start(settings: ImportSettings): Promise<void> {
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
