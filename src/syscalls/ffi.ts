/**
 * The one place that calls `Deno.dlopen`: the libc symbol table.
 *
 * Precondition for every symbol here but `poll_nb` and `usleep_nb`: synchronous
 * (never `nonblocking: true`).
 * ptrace requests must come from the tracer thread, and errno is thread-local, so every call
 * runs on the thread that reads its errno right after it.
 *
 * glibc's `ptrace`, `ioctl`, `fcntl` and `syscall` are variadic. They are bound here with fixed
 * integer/pointer signatures, which is correct on x86-64 (integer varargs travel in the same
 * registers as fixed arguments); each binding has a smoke test in tests/syscalls_test.ts.
 *
 * @module
 */

const SYMBOLS = {
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
  // char *strerror(int errnum);
  strerror: { parameters: ["i32"], result: "pointer" },
  // long ptrace(enum __ptrace_request request, pid_t pid, void *addr, void *data);
  ptrace: { parameters: ["i32", "i32", "u64", "u64"], result: "i64" },
  // pid_t waitpid(pid_t pid, int *wstatus, int options);
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // ssize_t process_vm_readv(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
  //                          const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
  process_vm_readv: {
    parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"],
    result: "i64",
  },
  // ssize_t process_vm_writev(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
  //                           const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
  process_vm_writev: {
    parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"],
    result: "i64",
  },
  // long syscall(long number, ...);
  syscall: {
    parameters: ["i64", "u64", "u64", "u64", "u64", "u64", "u64"],
    result: "i64",
  },
  // int open(const char *pathname, int flags, mode_t mode);
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int close(int fd);
  close: { parameters: ["i32"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  // ssize_t pread(int fd, void *buf, size_t count, off_t offset);
  pread64: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  // ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset);
  pwrite64: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  // ssize_t write(int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  // int pipe2(int pipefd[2], int flags);
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  // ssize_t tee(int fd_in, int fd_out, size_t len, unsigned int flags);
  tee: { parameters: ["i32", "i32", "u64", "u32"], result: "i64" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);
  // Run on a worker thread: waiting for a descriptor to become readable
  // without blocking the event loop. Its errno is lost; callers read the revents only.
  poll_nb: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  // int usleep(useconds_t usec);
  // Run on a worker thread: a sleep that lets the event loop run meanwhile (a timer would do
  // as well, but Deno loads its timers the first time one is set, about 4 ms).
  usleep_nb: { name: "usleep", parameters: ["u32"], result: "i32", nonblocking: true },
  // int fcntl(int fd, int cmd, ... /* long arg */);
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  // int ioctl(int fd, unsigned long request, ... /* void *argp */);
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
  mmap: { parameters: ["u64", "u64", "i32", "i32", "i32", "i64"], result: "u64" },
  // int munmap(void *addr, size_t length);
  munmap: { parameters: ["u64", "u64"], result: "i32" },
  // int clock_gettime(clockid_t clockid, struct timespec *tp);
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  // int kill(pid_t pid, int sig);
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // int fsync(int fd);
  fsync: { parameters: ["i32"], result: "i32" },
  // long sysconf(int name);
  sysconf: { parameters: ["i32"], result: "i64" },
  // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
  //                 const posix_spawnattr_t *attrp, char *const argv[], char *const envp[]);
  // As Deno.Command spawns (glibc: clone(CLONE_VM | CLONE_VFORK) on a stack of its own, only
  // glibc's code running in the child until execve): no fork of Deno.
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *actions);
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *actions, int fd, int newfd);
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *actions);
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_init(posix_spawnattr_t *attr);
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags);
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  // int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *sigdefault);
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *sigmask);
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_destroy(posix_spawnattr_t *attr);
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Symbols bound so far, kept alive with their libraries. */
const bound: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

/**
 * The symbols of `path`, each bound the first time it is used: a binding costs some 0.2 ms on
 * this machine (Deno compiles a trampoline for each), and a command uses only some of them.
 */
function bindOnUse<S extends Deno.ForeignLibraryInterface>(
  path: string,
  symbols: S,
): Deno.DynamicLibrary<S>["symbols"] {
  const out = {} as Deno.DynamicLibrary<S>["symbols"];
  for (const name of Object.keys(symbols)) {
    Object.defineProperty(out, name, {
      configurable: true,
      enumerable: true,
      get() {
        const lib = Deno.dlopen(path, { [name]: symbols[name] });
        bound.push(lib);
        Object.defineProperty(out, name, { value: lib.symbols[name], enumerable: true });
        return lib.symbols[name];
      },
    });
  }
  return out;
}

/** The libc symbols, each bound on its first use. */
export const libc: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] = bindOnUse(
  "libc.so.6",
  SYMBOLS,
);

const errnoPtr = libc.__errno_location();

/** The calling thread's errno. Read it right after the failing call. */
export function lastErrno(): number {
  return errnoPtr === null ? 0 : new Deno.UnsafePointerView(errnoPtr).getInt32();
}

/** The address of a buffer's first byte, for calls that take addresses as integers. */
export function addressOf(buf: Uint8Array | Int32Array | BigUint64Array): bigint {
  const p = Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>);
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

/** libc's text for an errno value. */
export function strerror(errno: number): string {
  const p = libc.strerror(errno);
  return p === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(p);
}

/** A NUL-terminated C string (UTF-8). */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
