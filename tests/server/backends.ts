/**
 * The two repository stores the server tests run against: a local folder, and a bucket on a real
 * S3-compatible server started on 127.0.0.1 (scripts/s3-test-server.ts). A test builds its
 * repository in a local folder with the import tool, then `seed()` puts it in the store; the
 * helpers read and age files in whichever store it is, bypassing the server.
 */
import { mkdir, readFile, readdir, stat, utimes, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { LocalStore, S3Store, type RepoStore } from "../../server/store.ts";
import { S3_TEST_CREDENTIALS, S3_TEST_REGION, startS3TestServer, type S3TestServer } from "../../scripts/s3-test-server.ts";

export const BACKENDS = ["local", "s3"] as const;
export type Backend = (typeof BACKENDS)[number];

export interface TestRepo {
  kind: Backend;
  store: RepoStore;
  /** The S3 test server (s3 only). */
  s3?: S3TestServer;
  /** `SANDGLASS_STORE` (or --store) naming this store, and the environment a child process needs. */
  spec: string;
  env: Record<string, string>;
  /** Puts the files of the local folder in the store (nothing to do for the folder itself). */
  seed(): Promise<void>;
  read(rel: string): Promise<Buffer | null>;
  exists(rel: string): Promise<boolean>;
  /** Names directly in a folder of the repository. */
  list(dir: string): Promise<string[]>;
  /** Writes a file as a broken upload or a bad mirror would, without any check. */
  write(rel: string, data: string | Uint8Array): Promise<void>;
  /** Makes a file look last written `ms` ago. */
  age(rel: string, ms: number): Promise<void>;
  close(): Promise<void>;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** A repository in `kind`'s store; `localDir` is the folder the test imports into. */
export async function openTestRepo(kind: Backend, localDir: string): Promise<TestRepo> {
  if (kind === "local") {
    const store = new LocalStore(localDir);
    return {
      kind,
      store,
      spec: localDir,
      env: {},
      seed: async () => undefined,
      read: (rel) => readFile(join(localDir, rel)).catch(() => null),
      exists: (rel) => stat(join(localDir, rel)).then(() => true, () => false),
      list: (dir) => readdir(join(localDir, dir)).catch(() => []),
      write: async (rel, data) => {
        await mkdir(dirname(join(localDir, rel)), { recursive: true });
        await writeFile(join(localDir, rel), data);
      },
      age: async (rel, ms) => {
        const t = new Date(Date.now() - ms);
        await utimes(join(localDir, rel), t, t);
      },
      close: async () => undefined,
    };
  }
  const s3 = await startS3TestServer();
  const store = new S3Store({ bucket: s3.bucket, prefix: "repo", endpoint: s3.endpoint, region: S3_TEST_REGION, credentials: S3_TEST_CREDENTIALS });
  const read = async (rel: string): Promise<Buffer | null> => {
    try {
      const got = await store.client.send(new GetObjectCommand({ Bucket: store.bucket, Key: store.key(rel) }));
      return Buffer.from(await got.Body!.transformToByteArray());
    } catch {
      return null;
    }
  };
  return {
    kind,
    store,
    s3,
    spec: `s3://${s3.bucket}/repo`,
    env: s3.env(),
    seed: async () => {
      for (const file of await walk(localDir).catch(() => [])) await store.put(relative(localDir, file), await readFile(file));
    },
    read,
    exists: async (rel) => (await store.stat(rel)) !== null,
    list: async (dir) => (await store.list(dir)).map((f) => f.name),
    write: (rel, data) => store.put(rel, data),
    age: (rel, ms) => s3.age(store.key(rel), ms),
    close: () => s3.close(),
  };
}
