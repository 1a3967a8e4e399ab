/**
 * The client of `deno task migrate` (scripts/migrate.ts), run in its own network namespace:
 * connects to HOST:PORT and sends the next 8-byte sequence number every few milliseconds,
 * reading each echo back in order. On SIGTERM it stops sending, waits for the echoes still due,
 * and prints one JSON line: words sent and echoed, the longest wait for an echo (what a user of
 * the service saw of the migration), and the error if the connection broke (a reset).
 *
 * Usage: deno run -A scripts/migrate_client.ts HOST PORT
 *
 * @module
 */
const [host, port] = Deno.args;
const conn = await Deno.connect({ hostname: host, port: Number(port) });
conn.setNoDelay(true);
let sent = 0n, echoed = 0n, maxGapMs = 0, lastEcho = performance.now(), error = "";
let stopping = false, done = false;
Deno.addSignalListener("SIGTERM", () => (stopping = true));

const reader = (async () => {
  const buf = new Uint8Array(4096);
  let pending = new Uint8Array(0);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch (e) {
      if (!done) error = (e as Error).message;
      return;
    }
    if (n === null) {
      error = "the service closed the connection";
      return;
    }
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - lastEcho);
    lastEcho = now;
    const all = new Uint8Array(pending.length + n);
    all.set(pending);
    all.set(buf.subarray(0, n), pending.length);
    const v = new DataView(all.buffer);
    let at = 0;
    for (; at + 8 <= all.length; at += 8) {
      const got = v.getBigUint64(at, true);
      if (got !== echoed) {
        error = `echo ${got} out of order (expected ${echoed})`;
        return;
      }
      echoed++;
    }
    pending = all.slice(at);
  }
})();

const word = new Uint8Array(8);
while (!stopping && !error) {
  new DataView(word.buffer).setBigUint64(0, sent, true);
  try {
    await conn.write(word);
  } catch (e) {
    error = (e as Error).message;
    break;
  }
  sent++;
  // While echoes are overdue, the gap grows: measured on the sending side too.
  maxGapMs = Math.max(maxGapMs, performance.now() - lastEcho);
  await new Promise((r) => setTimeout(r, 5));
}
const end = performance.now() + 10_000;
while (!error && echoed < sent && performance.now() < end) {
  await new Promise((r) => setTimeout(r, 10));
}
if (!error && echoed < sent) error = `${sent - echoed} echoes never came`;
done = true;
conn.close();
await reader;
console.log(JSON.stringify({
  sent: Number(sent),
  echoed: Number(echoed),
  maxGapMs: Math.round(maxGapMs),
  error: error || undefined,
}));
Deno.exit(error ? 1 : 0);
