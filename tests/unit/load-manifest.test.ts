/**
 * What a link to a missing snapshot says: a plain server answers 404; a bucket that does not let
 * everyone list it answers 403 for a name it lacks, which must read as missing too, not as an
 * outage. Either way a snapshot this browser already holds still opens.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { loadManifest } from "../../src/engine/chunk-source.ts";
import { LocalStore } from "../../src/engine/local-store.ts";

const source = { repo: "http://bucket.test/repo/", kind: "snapshot" as const, name: "nosuchsnapshot" };
const answering = (status: number) => () => Promise.resolve(new Response("<Error/>", { status }));

describe("a manifest the repository does not have", () => {
  it("404 and a bucket's 403 both say which snapshot is missing, and where", async () => {
    const store = await LocalStore.open("load-manifest-missing");
    await expect(loadManifest(store, source, answering(404))).rejects.toThrow(/No snapshot named "nosuchsnapshot" in the repository http:\/\/bucket\.test\/repo\/\.$/);
    await expect(loadManifest(store, source, answering(403))).rejects.toThrow(/No snapshot named "nosuchsnapshot" in the repository http:\/\/bucket\.test\/repo\/ \(it answered HTTP 403: a bucket says that/);
    await expect(loadManifest(store, source, answering(500))).rejects.toThrow(/answered HTTP 500/);
    store.close();
  });
});
