// `cocoon receipt verify` and `cocoon audit`: anyone checks a receipt, or a proxy's whole commit history, against the chain, without keys.
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { Address, Cell, type Transaction } from '@ton/core'
import { chainOptionsFromEnv, createChain, resolveEndpoint, type Chain } from '../ton/chain-client/index.ts'
import { policyFromRoot } from '../node/trust.ts'
import { parseCommitStateBody, ProxyContract, type CommitStateBody } from '../ton/contracts/index.ts'
import { verifyPeer, parseAttestedCert, SimulatedEvidenceVerifier, type EvidenceKind, type EvidenceVerifier } from '../tee/index.ts'
import { answerHash, decodeReceiptBoc, receiptFieldsJson, receiptIdFromSalt, verifyReceiptSignature, type Receipt } from '../payments/receipts/receipt.ts'
import { verifyReceiptProof } from '../payments/receipts/proof.ts'
import { priceRequest } from '../payments/pricing.ts'

const DEFAULT_CLIENT_URL = 'http://127.0.0.1:10000'
/** How far back `verify` and `audit` page through a proxy contract's transactions. */
const MAX_TX_PAGES = 200
const TX_PAGE = 100

class UsageError extends Error {
  readonly name = 'UsageError'
}

export interface Check {
  name: 'fields' | 'salt' | 'signature' | 'certificate' | 'proof' | 'answer' | 'cost'
  ok: boolean
  detail: string
}

interface ReceiptJson {
  id: string
  receipt: string
  fields: Record<string, unknown>
  salt: string
  index: number | null
  proof: string | null
  commit: { seqno: number; root: string; proxy: string; tx: string | null } | null
}

function chainFrom(spec: string | undefined): Chain {
  const opts = spec ? { endpoint: resolveEndpoint(spec) } : (chainOptionsFromEnv(process.env, {}) ?? { endpoint: resolveEndpoint('devnet') })
  return createChain(opts)
}

/** Every successful commit the proxy contract processed, oldest first, with the transaction hash. */
export async function commitHistory(chain: Chain, proxy: Address): Promise<Array<CommitStateBody & { tx: string; lt: bigint; at: number }>> {
  const out: Array<CommitStateBody & { tx: string; lt: bigint; at: number }> = []
  let from: { lt: string; hash: string } | undefined
  for (let page = 0; page < MAX_TX_PAGES; page++) {
    const txs: Transaction[] = await chain.client.getTransactions(proxy, { limit: TX_PAGE, ...(from ? { lt: from.lt, hash: from.hash, inclusive: false } : {}) })
    for (const tx of txs) {
      const m = tx.inMessage
      if (!m || m.info.type !== 'internal' || m.info.bounced) continue
      const d = tx.description
      if (d.type !== 'generic' || d.aborted || d.computePhase.type !== 'vm' || !d.computePhase.success) continue
      const body = parseCommitStateBody(m.body)
      if (body) out.push({ ...body, tx: tx.hash().toString('hex'), lt: tx.lt, at: tx.now })
    }
    if (txs.length < TX_PAGE) break
    const last = txs[txs.length - 1]
    from = { lt: last.lt.toString(), hash: last.hash().toString('base64') }
  }
  return out.reverse()
}

/** Runs every check on a receipt's JSON (the client node's GET /v1/receipts/{id}). */
export async function verifyReceiptJson(j: ReceiptJson, opts: { chain?: Chain; answer?: string }): Promise<Check[]> {
  const checks: Check[] = []
  const add = (name: Check['name'], ok: boolean, detail: string) => checks.push({ name, ok, detail })
  let r: Receipt
  try {
    r = decodeReceiptBoc(j.receipt)
  } catch (err) {
    add('fields', false, (err as Error).message)
    return checks
  }
  const f = r.fields
  // 1. The decoded fields are the cell's.
  const decoded = { ...receiptFieldsJson(f), signature: r.signature.toString('hex') }
  const shown = Object.fromEntries(Object.entries(j.fields ?? {}).filter(([k]) => k !== 'signer_certificate'))
  const differing = Object.keys({ ...decoded, ...shown }).filter((k) => JSON.stringify((decoded as Record<string, unknown>)[k]) !== JSON.stringify(shown[k]))
  add('fields', differing.length === 0, differing.length ? `the decoded fields differ from the receipt cell: ${differing.join(', ')}` : 'the fields are the receipt cell\'s')
  // 2. The salt is the one the id was derived from.
  const salt = /^[0-9a-f]{64}$/i.test(j.salt ?? '') ? Buffer.from(j.salt, 'hex') : undefined
  add('salt', !!salt && receiptIdFromSalt(salt) === j.id, salt ? (receiptIdFromSalt(salt) === j.id ? 'the receipt id derives from the salt' : 'the receipt id does not derive from this salt') : 'no 32-byte hex salt')
  // 3. The signature, by the key in the signer's certificate; the certificate's evidence under the root's policy.
  const certB64 = j.fields?.signer_certificate
  const cert = typeof certB64 === 'string' ? Buffer.from(certB64, 'base64') : undefined
  let certKey: Uint8Array | undefined
  let certPeer: Awaited<ReturnType<typeof verifyPeer>> | undefined
  let certError = cert ? '' : 'the receipt JSON carries no signer certificate'
  const chain = opts.chain
  let proxy: Awaited<ReturnType<ProxyContract['getIdentity']>> | undefined
  let proxyAddr: Address | undefined
  if (j.commit?.proxy && chain) {
    try {
      proxyAddr = Address.parse(j.commit.proxy)
      proxy = await chain.open(ProxyContract.createFromAddress(proxyAddr)).getIdentity()
    } catch (err) {
      certError ||= `cannot read the proxy contract: ${(err as Error).message}`
    }
  }
  let parsedKey: Uint8Array | undefined
  if (cert) {
    try {
      parsedKey = (await parseAttestedCert(cert)).publicKey
    } catch (err) {
      certError = `unreadable certificate: ${(err as Error).message}`
    }
  }
  if (cert && parsedKey) {
    try {
      const verifiers: Partial<Record<EvidenceKind, EvidenceVerifier>> = { simulated: new SimulatedEvidenceVerifier() }
      try {
        const { TdxEvidenceVerifier } = await import('../tee/tdx/index.ts')
        verifiers.tdx = new TdxEvidenceVerifier({ pccsUrl: process.env.COCOON_PCCS_URL })
      } catch {
        // TDX verification unavailable: a TDX certificate then fails below with a clear reason.
      }
      const role = f.signer === 'worker' ? 'worker' : 'proxy'
      if (!chain || !proxy) throw new Error('no chain or proxy contract to read the root\'s policy from (the receipt is not committed yet?)')
      const root = await chain.getRootState(proxy.root)
      // The root's allow-lists for this role; the certificate is judged as of the receipt's end.
      const policy = policyFromRoot(root, { role: role === 'worker' ? 'proxy' : 'client', acceptKinds: ['tdx', 'simulated'], maxCertAgeSec: 365 * 24 * 3600 })
      certPeer = await verifyPeer(cert, policy, { expectedRole: role, verifiers, now: () => new Date(f.endedAtMs) })
      certKey = certPeer.publicKey
      const expectKey = f.signer === 'worker' ? f.workerKey : f.proxyKey
      const certNames = f.signer === 'worker' ? Buffer.from(certPeer.publicKey) : Buffer.from(certPeer.claims.paymentKey ?? '', 'hex')
      if (!certNames.equals(expectKey)) throw new Error(`the certificate is not the ${f.signer} the receipt names`)
      if (f.signer === 'worker' && certPeer.imageHash !== f.imageHash.toString('hex')) throw new Error('the certificate\'s image is not the one the receipt states')
    } catch (err) {
      certError = (err as Error).message
      certKey = undefined
    }
  }
  add('certificate', !certError, certError || `${f.signer} certificate with ${certPeer!.kind} evidence, image ${certPeer!.imageHash.slice(0, 16)}…, allowed by the root`)
  const sigKey = certKey ?? parsedKey
  const sigOk = sigKey ? verifyReceiptSignature(r, sigKey) : false
  add('signature', sigOk, sigOk ? `signed by the key in the ${f.signer}'s certificate` : sigKey ? 'the signature does not verify against the certificate key' : 'no certificate key to check the signature against')
  // 4. The proof, against the root the proxy contract holds now, or that the commit's transaction recorded.
  if (!j.proof || !j.commit || j.index === null || j.index === undefined) add('proof', false, 'not committed yet: no proof')
  else {
    try {
      const root = Buffer.from(j.commit.root, 'hex')
      verifyReceiptProof(Cell.fromBoc(Buffer.from(j.proof, 'base64'))[0], root, j.index, r.hash)
      if (!chain || !proxyAddr) throw new Error('no chain to check the root against')
      const now = await chain.open(ProxyContract.createFromAddress(proxyAddr)).getReceiptsRoot()
      let anchored: string
      if (now.seqno === BigInt(j.commit.seqno)) {
        if (!now.root.equals(root)) throw new Error(`the proxy contract holds root ${now.root.toString('hex')} for commit ${j.commit.seqno}`)
        if (BigInt(j.index) >= now.count) throw new Error(`receipt ${j.index} is beyond the committed count ${now.count}`)
        anchored = `the root the proxy contract holds (commit ${j.commit.seqno})`
      } else {
        const c = (await commitHistory(chain, proxyAddr)).find((h) => h.seqno === BigInt(j.commit!.seqno))
        if (!c) throw new Error(`no commit ${j.commit.seqno} among the proxy contract's transactions`)
        if (!c.receiptsRoot.equals(root)) throw new Error(`commit ${j.commit.seqno} recorded root ${c.receiptsRoot.toString('hex')}`)
        if (BigInt(j.index) >= c.receiptsCount) throw new Error(`receipt ${j.index} is beyond commit ${j.commit.seqno}'s count ${c.receiptsCount}`)
        anchored = `the root commit ${j.commit.seqno} recorded (transaction ${c.tx.slice(0, 16)}…)`
      }
      add('proof', true, `receipt ${j.index} is in the log under ${anchored}`)
    } catch (err) {
      add('proof', false, (err as Error).message)
    }
  }
  // 5. The answer hash, against the text the app received.
  if (opts.answer !== undefined) {
    const ok = !!salt && answerHash(salt, opts.answer).equals(f.answerHash)
    add('answer', ok, ok ? 'the answer text matches the answer hash' : 'the answer text does not match the answer hash (or the salt)')
  }
  // 6. The cost, from the counts and the prices the proxy contract was deployed with (the root's).
  if (!proxy) add('cost', false, 'no proxy contract to read the prices from')
  else {
    try {
      const p = proxy.params
      const c = priceRequest(f, f.coefficient, p)
      const bad = [
        f.pricePerTokenNano !== p.pricePerTokenNano && `price per token ${f.pricePerTokenNano} is not the contract's ${p.pricePerTokenNano}`,
        f.workerFeePerTokenNano !== p.workerFeePerTokenNano && `worker fee ${f.workerFeePerTokenNano} is not the contract's ${p.workerFeePerTokenNano}`,
        f.adjustedTokens !== c.adjustedTokens && `adjusted tokens ${f.adjustedTokens}, recomputed ${c.adjustedTokens}`,
        f.costNano !== c.clientNano && `cost ${f.costNano} nanoTON, recomputed ${c.clientNano}`,
      ].filter(Boolean)
      add('cost', bad.length === 0, bad.length ? bad.join('; ') : `${f.costNano} nanoTON for ${f.adjustedTokens} adjusted tokens at ${p.pricePerTokenNano} nanoTON each`)
    } catch (err) {
      add('cost', false, (err as Error).message)
    }
  }
  return checks
}

async function loadReceipt(arg: string, clientUrl: string): Promise<ReceiptJson> {
  if (fs.existsSync(arg)) return JSON.parse(fs.readFileSync(arg, 'utf8')) as ReceiptJson
  if (!/^[\w-]{1,128}$/.test(arg)) throw new UsageError(`${arg.slice(0, 80)} is neither a file nor a receipt id`)
  // A client node with API keys on serves each app its own receipts: the app's key comes from the environment, never argv.
  const key = process.env.COCOON_API_KEY
  const r = await fetch(`${clientUrl.replace(/\/$/, '')}/v1/receipts/${arg}`, key ? { headers: { authorization: `Bearer ${key}` } } : {})
  if (r.status === 401) throw new UsageError(`the client node at ${clientUrl} needs the API key of the app whose receipt this is: set COCOON_API_KEY`)
  if (!r.ok) throw new UsageError(`the client node at ${clientUrl} has no receipt ${arg} (${r.status})`)
  return (await r.json()) as ReceiptJson
}

/** `cocoon receipt verify <file|receipt_id> [--chain URL] [--answer FILE] [--client URL] [--json]`. Exit 0 only if every check holds. */
export async function runReceipt(args: string[], io = { out: (s: string) => process.stdout.write(s), err: (s: string) => process.stderr.write(s) }): Promise<number> {
  if (args[0] !== 'verify') {
    io.err('usage: cocoon receipt verify <file|receipt_id> [--chain URL] [--answer FILE] [--client URL] [--json]\n')
    return 2
  }
  const { values, positionals } = parseArgs({
    args: args.slice(1),
    options: { chain: { type: 'string' }, answer: { type: 'string' }, client: { type: 'string' }, json: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  })
  if (positionals.length !== 1) throw new UsageError('give one receipt: a JSON file or a receipt id')
  const j = await loadReceipt(positionals[0], values.client ?? DEFAULT_CLIENT_URL)
  const answer = values.answer !== undefined ? fs.readFileSync(values.answer, 'utf8') : undefined
  const checks = await verifyReceiptJson(j, { chain: chainFrom(values.chain), answer })
  const ok = checks.every((c) => c.ok)
  if (values.json) io.out(JSON.stringify({ id: j.id, ok, checks, failed: checks.filter((c) => !c.ok).map((c) => c.name) }, null, 2) + '\n')
  else {
    for (const c of checks) io.out(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`)
    io.out(ok ? `receipt ${j.id}: every check holds\n` : `receipt ${j.id}: ${checks.filter((c) => !c.ok).map((c) => c.name).join(', ')} failed\n`)
  }
  return ok ? 0 : 1
}

/** `cocoon audit --proxy ADDRESS [--chain URL] [--json]`: replays the proxy contract's commits from the chain. */
export async function runAudit(args: string[], io = { out: (s: string) => process.stdout.write(s) }): Promise<number> {
  const { values } = parseArgs({ args, options: { proxy: { type: 'string' }, chain: { type: 'string' }, json: { type: 'boolean', default: false } }, strict: true })
  if (!values.proxy) throw new UsageError('--proxy ADDRESS (the proxy contract) is required')
  let addr: Address
  try {
    addr = Address.parse(values.proxy)
  } catch {
    throw new UsageError(`${values.proxy.slice(0, 80)} is not a TON address`)
  }
  const chain = chainFrom(values.chain)
  const history = await commitHistory(chain, addr)
  const problems: string[] = []
  let prev: (typeof history)[number] | undefined
  const rootAt = new Map<bigint, string>()
  for (const c of history) {
    const root = c.receiptsRoot.toString('hex')
    if (prev && c.seqno <= prev.seqno) problems.push(`commit ${c.seqno} (tx ${c.tx.slice(0, 16)}…) does not follow seqno ${prev.seqno}`)
    if (prev && c.receiptsCount < prev.receiptsCount) problems.push(`commit ${c.seqno}: the receipt count went from ${prev.receiptsCount} down to ${c.receiptsCount}`)
    if ((c.receiptsCount === 0n) !== /^0+$/.test(root)) problems.push(`commit ${c.seqno}: root ${root.slice(0, 16)}… is malformed for ${c.receiptsCount} receipts`)
    const seen = rootAt.get(c.receiptsCount)
    // The log is append-only and its root is fixed by its receipts: the same count must have the same root.
    if (seen !== undefined && seen !== root) problems.push(`commit ${c.seqno}: ${c.receiptsCount} receipts under a different root than before (history rewritten)`)
    rootAt.set(c.receiptsCount, root)
    prev = c
  }
  const now = await chain.open(ProxyContract.createFromAddress(addr)).getReceiptsRoot()
  if (prev && (now.seqno !== prev.seqno || !now.root.equals(prev.receiptsRoot) || now.count !== prev.receiptsCount)) problems.push(`get_receipts_root (${now.seqno}, ${now.count}) is not the last commit replayed (${prev.seqno}, ${prev.receiptsCount})`)
  const summary = {
    proxy: addr.toString(),
    commits: history.length,
    firstSeqno: history[0]?.seqno.toString() ?? null,
    lastSeqno: prev?.seqno.toString() ?? null,
    receipts: (prev?.receiptsCount ?? 0n).toString(),
    root: prev?.receiptsRoot.toString('hex') ?? null,
    /** The reliability record hash of the last commit (check the record itself with `cocoon reliability verify`). */
    reliabilityHash: prev && !/^0+$/.test(prev.reliabilityHash.toString('hex')) ? prev.reliabilityHash.toString('hex') : null,
    lastTx: prev?.tx ?? null,
    ok: problems.length === 0,
    problems,
  }
  if (values.json) io.out(JSON.stringify(summary, null, 2) + '\n')
  else {
    io.out(`proxy ${summary.proxy}: ${summary.commits} commits (seqno ${summary.firstSeqno ?? '-'} to ${summary.lastSeqno ?? '-'}), ${summary.receipts} receipts, root ${summary.root ?? '-'}, reliability record ${summary.reliabilityHash ?? '-'}\n`)
    for (const p of problems) io.out(`FAIL ${p}\n`)
    io.out(problems.length ? `audit failed: ${problems.length} problem(s)\n` : 'audit ok: seqnos and counts only grow, every root is well formed\n')
  }
  return problems.length ? 1 : 0
}
