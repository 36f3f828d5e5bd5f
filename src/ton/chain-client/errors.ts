// Errors of the chain client, one class per meaning; callers branch on `name` and the data fields.
import type { Address } from '@ton/core'
import { contractExitCodeName, type ContractExitCodeName } from '../contracts/errors.ts'

/**
 * A chain request failed: the endpoint was unreachable, timed out, refused the request (HTTP status
 * or toncenter `{ok: false}`), or answered something unreadable. `code` is toncenter's error code
 * (its HTTP status: 416 bad address, 429 rate limited, 500 message rejected, ...) when there was
 * one. Retriable failures have already been retried when this is thrown.
 */
export class ChainError extends Error {
  readonly name = 'ChainError'
  /** The JSON-RPC method, when known. */
  readonly method?: string
  /** Whether the failure was transient (network, 429, 5xx) and ran out of retries. */
  readonly transient: boolean
  constructor(message: string, readonly code?: number, opts: { method?: string; transient?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.method = opts.method
    this.transient = opts.transient ?? false
  }
}

/** A wallet key file is missing, unreadable or not a 32-byte seed. Never carries the key. */
export class WalletKeyError extends Error {
  readonly name = 'WalletKeyError'
  constructor(readonly file: string, readonly problem: string) {
    super(`wallet key ${file}: ${problem}`)
  }
}

/**
 * A wallet transfer did not land: the wallet's seqno did not advance in time even after one retry
 * with a fresh seqno (`reason: 'timeout'`), the chain refused it twice (`'rejected'`), or the
 * wallet's own transaction failed, e.g. for lack of funds (`'failed'`).
 */
export class WalletSendError extends Error {
  readonly name = 'WalletSendError'
  constructor(
    readonly wallet: Address,
    readonly reason: 'timeout' | 'rejected' | 'failed',
    detail: string,
    opts: { cause?: unknown } = {},
  ) {
    super(`wallet ${wallet.toString()}: transfer ${reason === 'timeout' ? 'timed out' : reason}: ${detail}`, opts)
  }
}

/** A message reached a contract but its transaction failed (compute or action phase). */
export class ContractRejectedError extends Error {
  readonly name = 'ContractRejectedError'
  /** The Cocoon meaning of `exitCode` (undefined for TVM codes and unknown ones). */
  readonly exitCodeName?: ContractExitCodeName
  constructor(
    readonly address: Address,
    /** Compute-phase exit code, or the action-phase result code when compute succeeded. */
    readonly exitCode: number | undefined,
    readonly op?: number,
  ) {
    const name = exitCode === undefined ? undefined : contractExitCodeName(exitCode)
    super(
      `contract ${address.toString()} rejected the message` +
        (exitCode === undefined ? '' : `: exit code ${exitCode}${name ? ` (${name})` : ''}`) +
        (op === undefined ? '' : ` [op 0x${op.toString(16).padStart(8, '0')}]`),
    )
    this.exitCodeName = name
  }
}

/** A message's transaction did not show up on its destination within the wait. */
export class DeliveryTimeoutError extends Error {
  readonly name = 'DeliveryTimeoutError'
  constructor(readonly address: Address, readonly waitedMs: number) {
    super(`no transaction for our message on ${address.toString()} within ${waitedMs} ms`)
  }
}

/** The root at this address is not deployed, or is owned by someone else than expected. */
export class RootMismatchError extends Error {
  readonly name = 'RootMismatchError'
  constructor(readonly address: Address, readonly problem: string) {
    super(`root ${address.toString()}: ${problem}`)
  }
}
