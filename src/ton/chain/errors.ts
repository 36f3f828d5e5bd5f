// Errors of the devnet chain, one class per meaning. The HTTP edge (server.ts) turns them into toncenter-style replies.

/** A JSON-RPC parameter is missing or has the wrong shape. */
export class InvalidParamsError extends Error {
  readonly name = 'InvalidParamsError'
  constructor(
    message: string,
    readonly param?: string,
  ) {
    super(message)
  }
}

/** An address parameter is not a TON address in raw or user-friendly form. */
export class InvalidAddressError extends Error {
  readonly name = 'InvalidAddressError'
  constructor(readonly value: unknown) {
    super('Incorrect address')
  }
}

/** The request body is not JSON, or not the JSON-RPC envelope toncenter expects. */
export class MalformedRequestError extends Error {
  readonly name = 'MalformedRequestError'
}

/** The JSON-RPC method is not one the devnet serves. */
export class UnknownMethodError extends Error {
  readonly name = 'UnknownMethodError'
  constructor(readonly method: unknown) {
    super('Unknown method')
  }
}

/** The request body is larger than the server accepts. */
export class PayloadTooLargeError extends Error {
  readonly name = 'PayloadTooLargeError'
  constructor(readonly limitBytes: number) {
    super(`request body exceeds ${limitBytes} bytes`)
  }
}

/** No route for this HTTP method and path. */
export class RouteNotFoundError extends Error {
  readonly name = 'RouteNotFoundError'
  constructor(
    readonly method: string,
    readonly path: string,
  ) {
    super(`no route for ${method} ${path}`)
  }
}

/** sendBoc got bytes that are not a bag of cells holding one inbound external message. */
export class MalformedMessageError extends Error {
  readonly name = 'MalformedMessageError'
  constructor(readonly reason: string) {
    super(`LITE_SERVER_UNKNOWN: cannot apply external message to current state : failed to parse external message: ${reason}`)
  }
}

/** The destination contract did not accept the external message (nothing changed on chain). */
export class ExternalMessageRejectedError extends Error {
  readonly name = 'ExternalMessageRejectedError'
  constructor(
    readonly reason: string,
    readonly exitCode?: number,
  ) {
    super(
      'LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted\n' +
        `${reason}${exitCode === undefined ? '' : `\nexitcode=${exitCode}`}`,
    )
  }
}

/** The emulator failed for a reason other than a rejected external message (estimateFee, get-methods). */
export class EmulationFailedError extends Error {
  readonly name = 'EmulationFailedError'
  constructor(
    readonly reason: string,
    readonly exitCode?: number,
  ) {
    super(`LITE_SERVER_UNKNOWN: emulation failed: ${reason}${exitCode === undefined ? '' : ` (exitcode=${exitCode})`}`)
  }
}

/** getTransactions was asked to start at a transaction the bounded index does not hold. */
export class TransactionNotFoundError extends Error {
  readonly name = 'TransactionNotFoundError'
  constructor(
    readonly lt: string | undefined,
    readonly hash: string | undefined,
    readonly perAccountLimit: number,
  ) {
    super(`transaction lt=${lt ?? '?'} hash=${hash ?? '?'} not found (the devnet keeps the last ${perAccountLimit} transactions per account)`)
  }
}

/** A faucet request above the per-call cap, or not a positive amount. */
export class FaucetLimitError extends Error {
  readonly name = 'FaucetLimitError'
  constructor(
    readonly requestedNano: bigint,
    readonly maxNano: bigint,
  ) {
    super(`faucet amount must be between 1 and ${maxNano} nanoTON, got ${requestedNano}`)
  }
}

/** Chain time may only move forward. */
export class ChainTimeError extends Error {
  readonly name = 'ChainTimeError'
  constructor(
    readonly requested: number,
    readonly current: number,
  ) {
    super(`chain time cannot go back: requested ${requested}, current ${current}`)
  }
}

/** The chain was closed; no further requests are served. */
export class ChainClosedError extends Error {
  readonly name = 'ChainClosedError'
  constructor() {
    super('devnet chain is closed')
  }
}

/** The persisted state under --dir cannot be read; the chain refuses to start rather than silently reset. */
export class ChainStateCorruptError extends Error {
  readonly name = 'ChainStateCorruptError'
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`devnet state ${path} is unreadable: ${reason}`)
  }
}

/** Another live process already runs a chain on this directory. */
export class ChainDirLockedError extends Error {
  readonly name = 'ChainDirLockedError'
  constructor(
    readonly dir: string,
    readonly holderPid: number | undefined,
  ) {
    super(`devnet chain directory ${dir} is in use${holderPid === undefined ? '' : ` by process ${holderPid}`}`)
  }
}

const STATUS_BY_NAME: Record<string, number> = {
  InvalidParamsError: 422,
  InvalidAddressError: 416,
  MalformedRequestError: 422,
  UnknownMethodError: 422,
  PayloadTooLargeError: 413,
  RouteNotFoundError: 404,
  MalformedMessageError: 500,
  ExternalMessageRejectedError: 500,
  EmulationFailedError: 500,
  TransactionNotFoundError: 404,
  FaucetLimitError: 422,
  ChainTimeError: 422,
  ChainClosedError: 503,
}

/**
 * The toncenter error code (also the HTTP status) for one of our errors, or undefined for anything
 * else, which the edge logs and answers with a generic 500.
 */
export function chainErrorStatus(err: unknown): number | undefined {
  if (!(err instanceof Error)) return undefined
  return STATUS_BY_NAME[err.name]
}
