/**
 * The entry of the bundled build (scripts/bundle.ts): the command line with every module a
 * command loads when needed (src/util/load.ts) inside, registered by its path under src/. One
 * file, compiled once into Deno's code cache, starts faster than some two hundred modules read
 * and linked one by one.
 *
 * @module
 */
import { registerBundled } from "../util/load.ts";
import * as check from "../check.ts";
import * as show from "../images/show.ts";
import * as dedup from "../images/dedup.ts";
import * as runDump from "./run_dump.ts";
import * as runRestore from "./run_restore.ts";
import * as pageServer from "./page_server.ts";
import * as lazyPages from "./lazy_pages.ts";
import * as swrk from "../rpc/swrk.ts";
import * as service from "../rpc/service.ts";
import * as uffd from "../syscalls/uffd.ts";

registerBundled({
  "check.ts": check,
  "images/show.ts": show,
  "images/dedup.ts": dedup,
  "cli/run_dump.ts": runDump,
  "cli/run_restore.ts": runRestore,
  "cli/page_server.ts": pageServer,
  "cli/lazy_pages.ts": lazyPages,
  "rpc/swrk.ts": swrk,
  "rpc/service.ts": service,
  "syscalls/uffd.ts": uffd,
});

export { main } from "./commands.ts";
