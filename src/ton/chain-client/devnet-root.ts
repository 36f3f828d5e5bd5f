// Deploying a root and filling its allow-lists: what `cocoon devnet` does at start, and
// `cocoon root deploy` on any network. Idempotent, so a restarted devnet reuses its root.
import type { Address } from '@ton/core'
import { contractCode } from '../contracts/compile.ts'
import type { HashKindName } from '../contracts/opcodes.ts'
import { RootContract, type RootState } from '../contracts/root.ts'
import type { Params } from '../contracts/storage.ts'
import type { CallOpts, Chain } from './chain.ts'
import { ROOT_DEPLOY_VALUE_NANO, TX_CONFIRM_TIMEOUT_MS, WALLET_POLL_INTERVAL_MS } from './constants.ts'
import { ONE_TON_NANO } from '../contracts/units.ts'
import { RootMismatchError } from './errors.ts'
import { hashList, normalizeHash, RootGovernance, type HashChange } from './governance.ts'
import { sleepOrAbort as sleep } from '../../core/time.ts'
import { collectMessages, type NodeWallet, type WalletMessage } from './wallet.ts'

/**
 * The devnet's network parameters. A request of ~100 tokens (50 prompt + 50 completion) at
 * coefficient 1.0 is 50 + 100 = 150 adjusted tokens = 0.0003 TON, so a few hundred requests cost
 * about 0.1 TON; the worst-case reservation for max_tokens 1024 at max_coefficient 4.0 stays
 * below 0.02 TON.
 */
export const DEVNET_PARAMS: Params = {
  paramsVersion: 0,
  /** 2,000 nanoTON per adjusted token, paid by clients. */
  pricePerTokenNano: 2_000n,
  /** 1,600 nanoTON per adjusted token to workers: the proxy keeps 20%. */
  workerFeePerTokenNano: 1_600n,
  /** Prompt tokens at 1.0x, cached prompt tokens at 0.1x. */
  promptMult: 10_000,
  cachedMult: 1_000,
  /** Completion and reasoning tokens at 2.0x (generating costs more than reading). */
  completionMult: 20_000,
  reasoningMult: 20_000,
  /** An audio second counts as 100 adjusted tokens (0.0002 TON a second at this price). */
  audioSecondMult: 1_000_000,
  /** A proxy can close 10 minutes after asking (or at once with no obligations). */
  proxyCloseDelaySec: 600,
  /** A client can take its deposit back 5 minutes after asking, if the proxy is silent. */
  clientCloseDelaySec: 300,
  minProxyStakeNano: 1n * ONE_TON_NANO,
  minClientStakeNano: ONE_TON_NANO / 10n,
}

export interface DeployRootOptions {
  /** Default DEVNET_PARAMS. Part of the root's address; ignored when the root already exists. */
  params?: Params
  /** Hex hashes to have on the allow-lists (added when missing; nothing is revoked). */
  proxyImageHashes?: string[]
  workerImageHashes?: string[]
  modelHashes?: string[]
  /** Lets one owner run several roots; part of the address. Default 0. */
  uniqueId?: number
  /** Value the root is deployed with (pays its storage). Default ROOT_DEPLOY_VALUE_NANO (0.2 TON). */
  deployValueNano?: bigint
  signal?: AbortSignal
}

export interface DeployedRoot {
  address: Address
  /** Whether this call deployed it (false: it was already there). */
  deployed: boolean
  /** Hashes this call added. */
  added: HashChange[]
  state: RootState
}

/** The root `owner` gets for these parameters and uniqueId (deployed or not). */
export async function rootFor(owner: Address, params: Params = DEVNET_PARAMS, uniqueId = 0): Promise<RootContract> {
  return RootContract.createFromConfig({ owner, params, uniqueId }, await contractCode('root'))
}

/**
 * Deploys the root owned by `owner` (unless its derived address is already deployed with that
 * owner) and adds the missing allow-list hashes, then waits until the chain shows it. Rejects with
 * RootMismatchError when the address is taken by a root with another owner.
 */
export async function deployRoot(chain: Chain, owner: NodeWallet, opts: DeployRootOptions = {}): Promise<DeployedRoot> {
  const call: CallOpts = { signal: opts.signal }
  const root = await rootFor(owner.address, opts.params ?? DEVNET_PARAMS, opts.uniqueId ?? 0)
  const wanted: HashChange[] = []
  const add = (kind: HashKindName, list: string[] | undefined) => {
    for (const h of list ?? []) {
      const hash = normalizeHash(h, `${kind} hash`)
      if (!wanted.some((w) => w.kind === kind && w.hash === hash)) wanted.push({ kind, hash })
    }
  }
  add('proxyImage', opts.proxyImageHashes)
  add('workerImage', opts.workerImageHashes)
  add('model', opts.modelHashes)

  const gov = new RootGovernance(chain, owner, root.address)
  const exists = await chain.isDeployed(root.address, call)
  let missing = wanted
  const messages: WalletMessage[] = []
  if (exists) {
    const state = await chain.getRootState(root.address, call)
    if (!state.owner.equals(owner.address)) {
      throw new RootMismatchError(root.address, `owned by ${state.owner.toString()}, not ${owner.address.toString()}`)
    }
    missing = wanted.filter((w) => !hashList(state, w.kind).includes(w.hash))
  } else {
    // The deploy goes first in the same transfer; the allow messages after it find the root deployed.
    messages.push(...(await collectMessages((via) => chain.open(root).sendDeploy(via, opts.deployValueNano ?? ROOT_DEPLOY_VALUE_NANO))))
  }
  for (const c of missing) {
    const hash = Buffer.from(c.hash, 'hex')
    messages.push(...(await collectMessages((via) => chain.open(root).sendAllowHash(via, { value: gov.valueNano, kind: c.kind, hash }))))
  }
  if (messages.length > 0) await gov.sendBatched(messages, call)
  // sendAndConfirm saw the deploy transaction; an endpoint behind a load balancer may lag a little.
  const deadline = Date.now() + TX_CONFIRM_TIMEOUT_MS
  while (!(await chain.isDeployed(root.address, call))) {
    if (Date.now() > deadline) throw new RootMismatchError(root.address, `still not deployed ${TX_CONFIRM_TIMEOUT_MS} ms after its deploy transaction`)
    await sleep(WALLET_POLL_INTERVAL_MS, opts.signal)
  }
  return { address: root.address, deployed: !exists, added: missing, state: await chain.getRootState(root.address, call) }
}
