/// <reference types="svelte" />
/// <reference types="vite/client" />

/** Build-time settings (README: "Serving a repository elsewhere"). */
interface ImportMetaEnv {
  /** The image repository's base URL (a bucket, a CDN); unset: `repo/` next to the app. */
  readonly VITE_SANDGLASS_REPO?: string;
  /** The Sandglass server's repository URL that publishing uploads to; unset: VITE_SANDGLASS_REPO. */
  readonly VITE_SANDGLASS_PUBLISH?: string;
}
