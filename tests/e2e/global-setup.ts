/**
 * Runs once before any test worker starts: the images a person might bring (own-image, url-image
 * and files specs). Built here rather than in each spec's beforeAll, where two workers could build
 * into the same folder at once. Quick when they are up to date (the inputs are stamped).
 */
import { execFileSync } from "node:child_process";

export default function globalSetup(): void {
  execFileSync("bash", ["scripts/build-test-images.sh"], { stdio: "inherit" });
}
