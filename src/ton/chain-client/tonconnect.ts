// A message as TON Connect's sendTransaction takes it, so an app user's own wallet (Tonkeeper…) can send what a node built.
import type { Address, Cell } from '@ton/core'

/** TON Connect's network ids (CHAIN.MAINNET / CHAIN.TESTNET). */
export const TONCONNECT_NETWORK = { mainnet: '-239', testnet: '-3' } as const
/** How long the wallet may take to send it. */
export const TONCONNECT_VALID_SEC = 300

export interface TonConnectTransaction {
  validUntil: number
  network?: string
  from?: string
  messages: Array<{ address: string; amount: string; payload?: string; stateInit?: string }>
}

/**
 * One message as a TON Connect transaction. A contract that does not exist yet is addressed
 * non-bounceable (a bounce would return the deposit before the state init deploys it).
 */
export function tonConnectTransaction(
  msg: { address: Address; valueNano: bigint; body?: Cell; stateInit?: Cell },
  opts: { nowSec: number; network?: 'mainnet' | 'testnet'; testOnly?: boolean; from?: Address },
): TonConnectTransaction {
  const testOnly = opts.testOnly ?? opts.network !== 'mainnet'
  return {
    validUntil: opts.nowSec + TONCONNECT_VALID_SEC,
    ...(opts.network ? { network: TONCONNECT_NETWORK[opts.network] } : {}),
    ...(opts.from ? { from: opts.from.toRawString() } : {}),
    messages: [
      {
        address: msg.address.toString({ bounceable: !msg.stateInit, testOnly }),
        amount: msg.valueNano.toString(),
        ...(msg.body ? { payload: msg.body.toBoc().toString('base64') } : {}),
        ...(msg.stateInit ? { stateInit: msg.stateInit.toBoc().toString('base64') } : {}),
      },
    ],
  }
}
