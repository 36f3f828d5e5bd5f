// The states of one request at a hop (the proxy's Exchange, the client node's relay): admitted → dispatched →
// relaying → settled, and back from dispatched to admitted for a retry before the first byte. One table of legal
// moves, checked on every move.
export type ExchangeState = 'admitted' | 'dispatched' | 'relaying' | 'settled'

/** The legal moves. A retry goes from dispatched back to admitted: another worker (or proxy) is tried. */
const MOVES: Record<ExchangeState, readonly ExchangeState[]> = {
  admitted: ['dispatched', 'settled'],
  dispatched: ['admitted', 'relaying', 'settled'],
  relaying: ['settled'],
  settled: [],
}

/** Throws IllegalTransitionError unless an exchange may go from `from` to `to`. */
export function checkMove(from: ExchangeState, to: ExchangeState): void {
  if (!MOVES[from].includes(to)) throw new IllegalTransitionError(from, to)
}

export class IllegalTransitionError extends Error {
  readonly name = 'IllegalTransitionError'
  constructor(
    readonly from: ExchangeState,
    readonly to: ExchangeState,
  ) {
    super(`an exchange cannot go from ${from} to ${to}`)
  }
}
