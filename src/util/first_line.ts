/**
 * Reading the first line a helper process writes: its readiness report.
 *
 * @module
 */

/**
 * The text `stream` yields up to and including its first newline (all of it, when it ends
 * first); the rest of the stream is cancelled.
 */
export async function readFirstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
  }
  reader.releaseLock();
  stream.cancel().catch(() => {});
  return text;
}
