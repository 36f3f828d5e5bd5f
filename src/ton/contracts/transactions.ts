// Flattens sandbox/TON transactions into the few facts that tests and the fee report need:
// who, which op, exit code, gas, and every nanoTON burnt as fees.
import { Address, type Transaction } from '@ton/core'

export interface TxSummary {
  /** The transaction's hash, hex, and logical time: where an explorer or getTransactions finds it. */
  hash: string
  lt: bigint
  /** Account the transaction ran on. */
  address: Address
  /** Sender of the inbound message (undefined for external messages). */
  from?: Address
  /** Opcode of the inbound body, if it has 32 bits or more. */
  op?: number
  /** Whether the inbound message was a bounce. */
  bounced: boolean
  /** nanoTON carried by the inbound internal message. */
  valueNano: bigint
  /** Compute-phase exit code; undefined when the compute phase was skipped. */
  exitCode?: number
  /** Action-phase result code (0 = ok); undefined when there was no action phase. */
  actionResultCode?: number
  /** Compute and action phases both succeeded and the transaction was not aborted. */
  success: boolean
  gasUsed: bigint
  /** `total_fees` of the transaction: storage, import, compute, action and the sender's share of forward fees. */
  totalFeesNano: bigint
  /** Forward fees still carried by outbound internal messages (paid when they are delivered). */
  outForwardFeesNano: bigint
  outMessages: number
}

export function summarizeTransaction(tx: Transaction): TxSummary {
  const inMsg = tx.inMessage
  let op: number | undefined
  let bounced = false
  let valueNano = 0n
  let from: Address | undefined
  if (inMsg) {
    const body = inMsg.body.beginParse()
    if (inMsg.info.type === 'internal') {
      from = inMsg.info.src
      bounced = inMsg.info.bounced
      valueNano = inMsg.info.value.coins
      if (bounced && body.remainingBits >= 64) body.skip(32)
    }
    if (body.remainingBits >= 32) op = body.loadUint(32)
  }
  let exitCode: number | undefined
  let actionResultCode: number | undefined
  let gasUsed = 0n
  let success = false
  const d = tx.description
  if (d.type === 'generic') {
    if (d.computePhase.type === 'vm') {
      exitCode = d.computePhase.exitCode
      gasUsed = d.computePhase.gasUsed
    }
    actionResultCode = d.actionPhase?.resultCode
    success =
      !d.aborted &&
      (d.computePhase.type !== 'vm' || d.computePhase.success) &&
      (d.actionPhase === undefined || d.actionPhase === null || d.actionPhase.success)
  }
  let outForwardFeesNano = 0n
  for (const m of tx.outMessages.values()) {
    if (m.info.type === 'internal') outForwardFeesNano += m.info.forwardFee
  }
  const address = new Address(0, Buffer.from(tx.address.toString(16).padStart(64, '0'), 'hex'))
  return {
    hash: tx.hash().toString('hex'),
    lt: tx.lt,
    address,
    from,
    op,
    bounced,
    valueNano,
    exitCode,
    actionResultCode,
    success,
    gasUsed,
    totalFeesNano: tx.totalFees.coins,
    outForwardFeesNano,
    outMessages: tx.outMessagesCount,
  }
}

/** Every nanoTON a set of transactions burnt: their total fees plus the forward fees their messages carried. */
export function feesBurntNano(txs: Transaction[]): bigint {
  let sum = 0n
  for (const tx of txs) {
    const s = summarizeTransaction(tx)
    sum += s.totalFeesNano + s.outForwardFeesNano
  }
  return sum
}
