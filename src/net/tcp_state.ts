/**
 * The kernel's TCP states (include/net/tcp_states.h), which the images use for every socket
 * with a state: inet sockets, and unix sockets that borrow LISTEN and ESTABLISHED.
 *
 * @module
 */

/** TCP_* states. */
export const TCP_STATE = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
  NEW_SYN_RECV: 12,
} as const;

/** The kernel's name of state `state`: `ESTABLISHED`, or `state N` for one it does not have. */
export function stateName(state: number): string {
  return Object.entries(TCP_STATE).find(([, v]) => v === state)?.[0] ?? `state ${state}`;
}
