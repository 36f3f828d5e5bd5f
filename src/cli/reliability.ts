// `cocoon reliability verify --proxy URL`: fetches a proxy's published reliability record, hashes it, compares
// the hash with the one its proxy contract committed, and recomputes the record from the receipts it was
// derived from. Anyone can run it, without keys. docs/receipts.md ("Reliability record").
import { parseArgs } from 'node:util'
import { Address, beginCell, Cell, Dictionary } from '@ton/core'
import { chainOptionsFromEnv, createChain, resolveEndpoint, type Chain } from '../ton/chain-client/index.ts'
import { ProxyContract } from '../ton/contracts/index.ts'
import { decodeReceiptBoc, verifyReceiptSignature, type Receipt } from '../payments/receipts/receipt.ts'
import { buildReliabilityRecord, compareRecomputed, reliabilityHash, type ReliabilityRecord } from '../payments/receipts/reliability.ts'
import { commitHistory } from './receipts.ts'

/** The path the proxy serves its record at, on its stats port (src/proxy/reliability.ts RELIABILITY_PATH). */
const PATH = '/cocoon/v1/reliability'
/** The served JSON with the window's receipts is at most a few MB (10,000 receipts). */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024

class UsageError extends Error {
  readonly name = 'UsageError'
}

export interface ReliabilityCheck {
  name: 'fetch' | 'hash' | 'contract' | 'chain' | 'receipts' | 'recompute'
  ok: boolean
  detail: string
}

export interface ServedReliability {
  seqno: number
  hash: string
  tx: string | null
  contract: string
  record: ReliabilityRecord
  receipts?: string[]
}

function chainFrom(spec: string | undefined): Chain {
  const opts = spec ? { endpoint: resolveEndpoint(spec) } : (chainOptionsFromEnv(process.env, {}) ?? { endpoint: resolveEndpoint('devnet') })
  return createChain(opts)
}

/** The record URL for `--proxy`: the proxy's stats URL (http://host:port) or host:port. */
export function reliabilityUrl(proxy: string): string {
  const base = /^https?:\/\//.test(proxy) ? proxy : `http://${proxy}`
  let u: URL
  try {
    u = new URL(base)
  } catch {
    throw new UsageError(`${proxy.slice(0, 80)} is not a URL or host:port`)
  }
  if (u.pathname === '/' || u.pathname === '') u.pathname = PATH
  u.searchParams.set('receipts', '1')
  return u.toString()
}

async function fetchServed(url: string): Promise<ServedReliability> {
  const r = await fetch(url, { signal: AbortSignal.timeout(30_000) })
  const text = await r.text()
  if (text.length > MAX_RESPONSE_BYTES) throw new Error('the answer is too large')
  if (!r.ok) {
    let msg = text.slice(0, 300)
    try {
      msg = (JSON.parse(text) as { error?: { message?: string } }).error?.message?.slice(0, 300) ?? msg
    } catch {
      // not JSON
    }
    throw new Error(`${r.status}: ${msg}`)
  }
  return JSON.parse(text) as ServedReliability
}

/** Runs every check on a served record. `contract` pins the proxy contract (default: the one the proxy names). */
export async function verifyServedReliability(s: ServedReliability, opts: { chain: Chain; contract?: string }): Promise<ReliabilityCheck[]> {
  const checks: ReliabilityCheck[] = []
  const add = (name: ReliabilityCheck['name'], ok: boolean, detail: string) => checks.push({ name, ok, detail })
  // 1. The served hash is the record's.
  let hash: Buffer
  try {
    hash = reliabilityHash(s.record)
  } catch (err) {
    add('hash', false, `the record is malformed: ${(err as Error).message}`)
    return checks
  }
  const seqno = Number(s.seqno)
  add('hash', hash.toString('hex') === s.hash && s.record.seqno === seqno, hash.toString('hex') !== s.hash ? `the record hashes to ${hash.toString('hex')}, not the ${String(s.hash).slice(0, 64)} served` : s.record.seqno !== seqno ? `the record says commit ${s.record.seqno}, the answer ${seqno}` : `SHA-256 of the canonical JSON is ${s.hash}`)
  // 2. The proxy contract is the one whose payment key the record (and its receipts) name.
  let addr: Address
  try {
    addr = Address.parse(opts.contract ?? s.contract)
  } catch {
    add('contract', false, `${String(opts.contract ?? s.contract).slice(0, 80)} is not a TON address`)
    return checks
  }
  const proxy = opts.chain.open(ProxyContract.createFromAddress(addr))
  try {
    const id = await proxy.getIdentity()
    const ok = id.publicKey.toString('hex') === s.record.proxy_key
    add('contract', ok, ok ? `proxy contract ${addr.toString()} has the payment key the record names` : `proxy contract ${addr.toString()} has payment key ${id.publicKey.toString('hex')}, the record names ${String(s.record.proxy_key).slice(0, 64)}`)
  } catch (err) {
    add('contract', false, `cannot read proxy contract ${addr.toString()}: ${(err as Error).message}`)
    return checks
  }
  // 3. The hash is what the chain holds for that commit: now, or in the commit's transaction.
  let receiptsRoot: Buffer | undefined
  let receiptsCount: bigint | undefined
  try {
    const now = await proxy.getReliabilityHash()
    if (now.seqno === BigInt(seqno)) {
      if (!now.hash.equals(hash)) throw new Error(`get_reliability_hash holds ${now.hash.toString('hex')} for commit ${seqno}, not this record's hash`)
      const rr = await proxy.getReceiptsRoot()
      receiptsRoot = rr.root
      receiptsCount = rr.count
      add('chain', true, `get_reliability_hash holds this record's hash for commit ${seqno}, the latest`)
    } else {
      const c = (await commitHistory(opts.chain, addr)).find((h) => h.seqno === BigInt(seqno))
      if (!c) throw new Error(`no commit ${seqno} among the proxy contract's transactions (latest: ${now.seqno})`)
      if (!c.reliabilityHash.equals(hash)) throw new Error(`commit ${seqno} carried reliability hash ${c.reliabilityHash.toString('hex')}, not this record's`)
      receiptsRoot = c.receiptsRoot
      receiptsCount = c.receiptsCount
      add('chain', true, `commit ${seqno} (transaction ${c.tx.slice(0, 16)}…) carried this record's hash; the contract has since committed ${now.seqno}`)
    }
  } catch (err) {
    add('chain', false, (err as Error).message)
  }
  // 4. The receipts: as many as the window says, signed, naming this proxy; anchored in the committed root when the window starts at 0.
  const { from, to } = s.record.receipts
  if (!s.receipts) {
    add('receipts', false, 'the proxy served no receipts (ask with ?receipts=1)')
    return checks
  }
  const receipts: Receipt[] = []
  const bad: string[] = []
  let workerSigned = 0
  for (const [i, b64] of s.receipts.entries()) {
    try {
      const r = decodeReceiptBoc(b64)
      if (r.fields.proxyKey.toString('hex') !== s.record.proxy_key) bad.push(`receipt ${from + i} names another proxy`)
      if (r.fields.signer === 'worker') {
        if (!verifyReceiptSignature(r, r.fields.workerKey)) bad.push(`receipt ${from + i} is not signed by the worker it names`)
        workerSigned++
      }
      receipts.push(r)
    } catch (err) {
      bad.push(`receipt ${from + i}: ${(err as Error).message}`)
    }
  }
  if (s.receipts.length !== to - from) bad.push(`${s.receipts.length} receipts served for the window [${from}, ${to})`)
  if (receiptsCount !== undefined && BigInt(to) !== receiptsCount) bad.push(`the window ends at ${to}, the commit counts ${receiptsCount} receipts`)
  let anchored = 'not anchored: the window does not start at receipt 0, so its root cannot be rebuilt from it (signatures checked)'
  if (from === 0 && receiptsRoot && bad.length === 0) {
    const d = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell())
    receipts.forEach((r, i) => d.set(BigInt(i), Cell.fromBoc(r.boc)[0]))
    const root = receipts.length ? beginCell().storeDictDirect(d).endCell().hash() : Buffer.alloc(32)
    if (!root.equals(receiptsRoot)) bad.push(`the served receipts rebuild root ${root.toString('hex')}, the commit holds ${receiptsRoot.toString('hex')}`)
    else anchored = 'they rebuild the receipts root the commit holds'
  }
  add('receipts', bad.length === 0, bad.length ? bad.slice(0, 5).join('; ') + (bad.length > 5 ? `; and ${bad.length - 5} more` : '') : `${receipts.length} receipts (${workerSigned} signed by their worker, the rest by the proxy); ${anchored}`)
  // 5. Recompute the record from the receipts; uptime is the proxy's statement and cannot be.
  const recomputed = buildReliabilityRecord({ proxyKey: s.record.proxy_key, seqno, receipts: { from, to }, fields: receipts.map((r) => r.fields), uptimeWindow: { startMs: 0, endMs: 0 } })
  const diff = compareRecomputed(s.record, recomputed)
  add('recompute', diff.length === 0, diff.length ? diff.slice(0, 5).join('; ') + (diff.length > 5 ? `; and ${diff.length - 5} more` : '') : `requests, successes, cancelled, p50 time to first token and tokens/s of ${recomputed.workers.length} worker(s) recompute from the receipts (uptime is the proxy's statement)`)
  return checks
}

/** `cocoon reliability verify --proxy URL [--contract ADDRESS] [--chain URL] [--json]`. Exit 0 only if every check holds. */
export async function runReliability(args: string[], io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) }): Promise<number> {
  if (args[0] !== 'verify') {
    io.err('usage: cocoon reliability verify --proxy URL [--contract ADDRESS] [--chain URL] [--json]\n')
    return 2
  }
  const { values } = parseArgs({ args: args.slice(1), options: { proxy: { type: 'string' }, contract: { type: 'string' }, chain: { type: 'string' }, json: { type: 'boolean', default: false } }, strict: true })
  if (!values.proxy) throw new UsageError('--proxy URL (the proxy\'s stats address, e.g. http://127.0.0.1:10012) is required')
  const url = reliabilityUrl(values.proxy)
  let checks: ReliabilityCheck[]
  let served: ServedReliability | undefined
  try {
    served = await fetchServed(url)
    checks = await verifyServedReliability(served, { chain: chainFrom(values.chain), contract: values.contract })
  } catch (err) {
    checks = [{ name: 'fetch', ok: false, detail: `${url}: ${(err as Error).message}` }]
  }
  const ok = checks.every((c) => c.ok)
  if (values.json) io.out(JSON.stringify({ ok, seqno: served?.seqno ?? null, hash: served?.hash ?? null, workers: served?.record?.workers ?? null, checks, failed: checks.filter((c) => !c.ok).map((c) => c.name) }, null, 2) + '\n')
  else {
    for (const c of checks) io.out(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`)
    io.out(ok ? `reliability record of commit ${served!.seqno}: every check holds\n` : `reliability record: ${checks.filter((c) => !c.ok).map((c) => c.name).join(', ')} failed\n`)
  }
  return ok ? 0 : 1
}
