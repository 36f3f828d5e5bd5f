// How every Cocoon message is built and sent by the wrappers: opcode and query id first, gas paid apart from the value.
import { beginCell, Cell, SendMode, type Builder, type ContractProvider, type Sender } from '@ton/core'

/** The start of every Cocoon message body: 32-bit opcode, then 64-bit query id. */
export function opBody(op: number, queryId: bigint = 0n): Builder {
  return beginCell().storeUint(op, 32).storeUint(queryId, 64)
}

/** Sends `body` with `value` attached; the sender pays the forwarding fees on top (what is unused comes back). */
export async function sendOp(provider: ContractProvider, via: Sender, value: bigint, body: Cell): Promise<void> {
  await provider.internal(via, { value, sendMode: SendMode.PAY_GAS_SEPARATELY, body })
}
