/**
 * A page copier's thread (page_copiers.ts): takes chunks of each job it is posted until none
 * is left (copy_job.ts), and answers with the bytes it wrote.
 *
 * Messages in: `{ id, job: CopyJob }`; answered `{ id, bytes }`, or `{ id, error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { CHUNK, copyChunks, type CopyJob } from "./copy_job.ts";

const buf = new Uint8Array(CHUNK);

self.onmessage = (e: MessageEvent) => {
  const { id, job } = e.data as { id: number; job: CopyJob };
  try {
    self.postMessage({ id, bytes: copyChunks(job, buf) });
  } catch (err) {
    self.postMessage({ id, error: (err as Error).message });
  }
};
