/**
 * A UTS namespace of the tree's own (the root made it, with unshare or clone): its host and
 * domain names, read inside the root task (uname(2) answers for the caller's namespace), into
 * utsns-ID.img as criu writes it, ID being the namespace's id in ids-PID.img.
 *
 * @module
 */
import { create } from "../images/protobuf.ts";
import { utsns_entrySchema } from "../../proto/gen/misc_pb.ts";
import { NR, readRemote, UTSNAME } from "../syscalls/mod.ts";
import type { RemoteSyscalls } from "../tree/infect.ts";
import type { DumpContext } from "./context.ts";

/** The host and domain names of a UTS namespace. */
export interface UtsNames {
  nodename: string;
  domainname: string;
}

/** The names of the UTS namespace task `rs` runs in, asked inside it. */
export function readUtsNames(rs: RemoteSyscalls): UtsNames {
  const at = rs.scratch(UTSNAME.size);
  rs.check(NR.uname, "uname", at);
  const buf = new Uint8Array(UTSNAME.size);
  readRemote(rs.task.pid, at, buf);
  const field = (off: number) => {
    const bytes = buf.subarray(off, off + UTSNAME.field);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
  };
  return { nodename: field(UTSNAME.nodename), domainname: field(UTSNAME.domainname) };
}

/** utsns-ID.img. */
export function writeUtsNs(ctx: DumpContext, id: number, names: UtsNames): void {
  ctx.image(`utsns-${id}.img`, "UTSNS").entry(
    utsns_entrySchema,
    create(utsns_entrySchema, names),
  );
}
