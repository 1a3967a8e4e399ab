/**
 * The tree's own UTS namespace, made by the restore helper (CLONE_NEWUTS): its host and domain
 * names set from inside the root task before any other task is made in it.
 *
 * @module
 */
import type { utsns_entry } from "../../proto/gen/misc_pb.ts";
import { errnoName, NR, writeRemote } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import { RestoreError } from "./files.ts";

/** sethostname(2) and setdomainname(2) in the task of `rs`. */
export function setUtsNames(rs: RemoteSyscalls, names: utsns_entry): void {
  for (
    const [nr, name, value] of [
      [NR.sethostname, "host name", names.nodename],
      [NR.setdomainname, "domain name", names.domainname],
    ] as const
  ) {
    const bytes = new TextEncoder().encode(value);
    const at = rs.scratch(bytes.length + 1);
    writeRemote(rs.task.pid, at, bytes);
    const ret = rs.call(nr, at, bytes.length);
    if (ret < 0n) {
      throw new RestoreError(
        `Cannot restore the ${name} ${JSON.stringify(value)} of task ${rs.task.pid}: ` +
          errnoName(Number(-ret)),
      );
    }
  }
}
