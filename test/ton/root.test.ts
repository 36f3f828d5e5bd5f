// The root on the devnet chain: deployment with allow-lists, policy derived from it per role, a
// watcher that sees revocations within one refresh, and the governance CLI.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import type { Address } from '@ton/core'
import { runRoot } from '../../src/cli/root.ts'
import { runWallet } from '../../src/cli/wallet.ts'
import { ContractExitCode } from '../../src/ton/contracts/errors.ts'
import type { RootState } from '../../src/ton/contracts/root.ts'
import type { Chain } from '../../src/ton/chain-client/chain.ts'
import { deployRoot, DEVNET_PARAMS } from '../../src/ton/chain-client/devnet-root.ts'
import { ChainError } from '../../src/ton/chain-client/errors.ts'
import { RootGovernance } from '../../src/ton/chain-client/governance.ts'
import { RootWatcher } from '../../src/ton/chain-client/root-watcher.ts'
import { policyFromRoot } from '../../src/node/trust.ts'
import { loadOrCreateWalletKey, type NodeWallet } from '../../src/ton/chain-client/wallet.ts'
import { ProxyRegistry } from '../../src/ton/chain-client/proxy-registry.ts'
import { captureIo, hash, startDevnet, type Devnet } from './helpers.ts'

const PROXY_IMAGE = hash(0x11)
const BIN = fileURLToPath(new URL('../../bin/cocoon.js', import.meta.url))

/** Runs the real `cocoon` binary as a child process. */
function runCocoon(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (c) => (stdout += c))
    p.stderr.on('data', (c) => (stderr += c))
    p.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, o[k]]))
}
const WORKER_IMAGE = hash(0x22)
const MODEL = hash(0x33)

describe('root on the devnet', () => {
  let net: Devnet
  let owner: NodeWallet
  let ownerKey: string
  let root: Address

  before(async () => {
    net = await startDevnet()
    ;({ wallet: owner, keyFile: ownerKey } = await net.wallet('owner', '20'))
  })
  after(() => net.close())

  it('deploys with the parameters and allow-lists, readable by anyone', async () => {
    const out = await deployRoot(net.chain, owner, {
      params: DEVNET_PARAMS,
      proxyImageHashes: [PROXY_IMAGE],
      workerImageHashes: [WORKER_IMAGE, hash(0x23)],
      modelHashes: [MODEL.toUpperCase()],
    })
    root = out.address
    assert.equal(out.deployed, true)
    const st = await net.chain.getRootState(root)
    assert.ok(st.owner.equals(owner.address))
    assert.deepEqual(st.params, DEVNET_PARAMS)
    assert.deepEqual(st.proxyImageHashes, [PROXY_IMAGE])
    assert.deepEqual(st.workerImageHashes.sort(), [WORKER_IMAGE, hash(0x23)].sort())
    assert.deepEqual(st.modelHashes, [MODEL])
    assert.equal(st.version, 4)
  })

  it('is idempotent: a second deploy reuses the root and only adds what is missing', async () => {
    const out = await deployRoot(net.chain, owner, { proxyImageHashes: [PROXY_IMAGE], modelHashes: [MODEL, hash(0x34)] })
    assert.equal(out.address.toRawString(), root.toRawString())
    assert.equal(out.deployed, false)
    assert.deepEqual(out.added, [{ kind: 'model', hash: hash(0x34) }])
    assert.equal(out.state.version, 5)
  })

  it('derives each role’s policy from the root', async () => {
    const st = await net.chain.getRootState(root)
    const base = { acceptKinds: ['simulated' as const, 'none' as const], maxCertAgeSec: 600 }
    const proxy = policyFromRoot(st, { ...base, role: 'proxy' })
    assert.deepEqual(proxy.imageHashes, { worker: st.workerImageHashes, client: '*' })
    assert.deepEqual(proxy.modelHashes, st.modelHashes)
    assert.deepEqual(proxy.acceptKinds, ['simulated', 'none'])
    assert.equal(proxy.maxCertAgeSec, 600)
    const worker = policyFromRoot(st, { ...base, role: 'worker' })
    assert.deepEqual(worker.imageHashes, { proxy: [PROXY_IMAGE] })
    assert.equal(worker.modelHashes, '*')
    // The client checks the workers it encrypts to as the proxy does (docs/e2ee.md).
    const client = policyFromRoot(st, { ...base, role: 'client' })
    assert.deepEqual(client.imageHashes, { proxy: [PROXY_IMAGE], worker: st.workerImageHashes })
    assert.deepEqual(client.modelHashes, st.modelHashes)
  })

  it('watcher: a revoked worker image leaves the proxy policy within one refresh', async () => {
    const watcher = new RootWatcher({ chain: net.chain, root }, { refreshMs: 250 })
    const first = await watcher.start()
    const seen: RootState[] = []
    watcher.subscribe((s) => seen.push(s))
    try {
      await new RootGovernance(net.chain, owner, root).revokeHash('workerImage', hash(0x23))
      const revokedAt = Date.now()
      while (seen.length === 0 && Date.now() - revokedAt < 2_000) await new Promise((r) => setTimeout(r, 20))
      assert.equal(seen.length, 1, 'no change seen within 2 s')
      // One refresh (250 ms) plus the read itself, with slack for a loaded machine.
      assert.ok(Date.now() - revokedAt <= 1_000, `seen after ${Date.now() - revokedAt} ms`)
      assert.equal(seen[0].version, first.version + 1)
      assert.deepEqual(policyFromRoot(seen[0], { role: 'proxy', acceptKinds: ['simulated'] }).imageHashes.worker, [WORKER_IMAGE])
    } finally {
      watcher.stop()
    }
  })

  it('watcher: keeps the last good state through chain failures', async () => {
    let failing = false
    const flaky: Chain = Object.create(net.chain, {
      getRootState: {
        value: (a: Address, o?: { signal?: AbortSignal }) => (failing ? Promise.reject(new ChainError('down', 503)) : net.chain.getRootState(a, o)),
      },
    })
    const warnings: string[] = []
    const log = { debug() {}, info() {}, warn: (m: string) => void warnings.push(m), error() {}, child: () => log }
    const watcher = new RootWatcher({ chain: flaky, root, log }, { refreshMs: 50 })
    const st = await watcher.start()
    try {
      failing = true
      assert.equal((await watcher.refresh())?.version, st.version)
      assert.equal(watcher.state?.version, st.version)
      assert.ok(warnings.some((w) => /keeping the last state/.test(w)))
      failing = false
      assert.equal((await watcher.refresh())?.version, st.version)
    } finally {
      watcher.stop()
    }
  })

  describe('governance CLI', () => {
    const cli = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
      const { out, io } = captureIo({ COCOON_CHAIN_ENDPOINT: net.server.endpoint, COCOON_ROOT: root.toString(), ...env })
      const code = await runRoot(args, io)
      return { code, ...out }
    }

    it('shows the root as text and JSON', async () => {
      const text = await cli(['show'])
      assert.equal(text.code, 0, text.stderr)
      assert.match(text.stdout, /price per token +2000 nanoTON/)
      assert.match(text.stdout, new RegExp(`proxy images \\(1\\)\\n  ${PROXY_IMAGE}`))
      const json = await cli(['show', '--json', '--endpoint', net.server.url, '--root', root.toString()])
      const st = JSON.parse(json.stdout)
      assert.equal(st.owner, owner.address.toString())
      assert.equal(st.params.pricePerTokenNano, '2000')
      assert.deepEqual(st.proxyImageHashes, [PROXY_IMAGE])
    })

    it('allows and revokes images and models with the owner key', async () => {
      const img = hash(0x44)
      let r = await cli(['allow-image', '--role', 'worker', img, '--wallet-key', ownerKey])
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, new RegExp(`allowed worker image ${img} on .* \\(version \\d+\\)`))
      assert.ok((await net.chain.getRootState(root)).workerImageHashes.includes(img))
      r = await cli(['allow-image', '--role', 'worker', img, '--wallet-key', ownerKey])
      assert.match(r.stdout, /already on the list; nothing to do/)
      r = await cli(['revoke-image', '--role', 'worker', img, '--wallet-key', ownerKey])
      assert.equal(r.code, 0, r.stderr)
      assert.ok(!(await net.chain.getRootState(root)).workerImageHashes.includes(img))

      r = await cli(['allow-model', hash(0x55), '--wallet-key', ownerKey, '--json'])
      assert.equal(r.code, 0, r.stderr)
      assert.ok(JSON.parse(r.stdout).modelHashes.includes(hash(0x55)))
      r = await cli(['revoke-model', hash(0x55)], { COCOON_WALLET_KEY_FILE: ownerKey })
      assert.equal(r.code, 0, r.stderr)
    })

    it('sets parameters by name, keeping the others', async () => {
      const before = await net.chain.getRootState(root)
      const r = await cli(['set-params', '--price-per-token-nano', '3000', '--client-close-delay-sec', '120', '--wallet-key', ownerKey])
      assert.equal(r.code, 0, r.stderr)
      const st = await net.chain.getRootState(root)
      assert.deepEqual(st.params, { ...before.params, pricePerTokenNano: 3000n, clientCloseDelaySec: 120, paramsVersion: before.params.paramsVersion + 1 })
    })

    it('a proxy registers itself (cocoon proxy register|update|unregister), and the owner delists one (cocoon root delist-proxy)', async () => {
      const { wallet: opWallet, keyFile: opKey } = await net.wallet('proxy-operator', '10')
      const paymentKeyFile = path.join(net.dir, 'proxy-payment.key')
      const config = path.join(net.dir, 'proxy.json')
      fs.writeFileSync(config, JSON.stringify({
        role: 'proxy',
        dataDir: path.join(net.dir, 'proxy'),
        chain: { endpoint: net.server.endpoint, root: root.toString(), walletKeyFile: opKey, paymentKeyFile },
        tee: { kind: 'simulated' },
        policy: { acceptKinds: ['simulated', 'none'], imageHashes: {} },
        stats: '127.0.0.1:0',
        workerListen: '127.0.0.1:21001',
        clientListen: '127.0.0.1:21002',
      }))
      const run = (args: string[]) => runCocoon(['proxy', ...args, '--config', config])
      const key = loadOrCreateWalletKey(paymentKeyFile).publicKey.toString('hex')

      // An image that is not on the allow-list is refused by the root, with its exit code named.
      let r = await run(['register', '--image', hash(0x99)])
      assert.equal(r.code, 1, r.stderr)
      assert.match(r.stderr, new RegExp(`exit code ${ContractExitCode.ProxyImageNotAllowed} \\(ProxyImageNotAllowed\\)`))

      r = await run(['register', '--image', PROXY_IMAGE, '--stake', '1.5'])
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(
        pick(JSON.parse(r.stdout), ['publicKey', 'state', 'offered', 'host', 'workerPort', 'clientPort', 'imageHash', 'stakeTon']),
        { publicKey: key, state: 'listed', offered: true, host: '127.0.0.1', workerPort: 21001, clientPort: 21002, imageHash: PROXY_IMAGE, stakeTon: '1.5' },
      )
      let entry = (await net.chain.getRootState(root)).proxies.get(key)
      assert.ok(entry?.owner.equals(opWallet.address))

      r = await run(['update', '--host', '10.77.0.11', '--client-port', '31002'])
      assert.equal(r.code, 0, r.stderr)
      entry = (await net.chain.getRootState(root)).proxies.get(key)
      assert.deepEqual([entry?.host, entry?.clientPort, entry?.workerPort], ['10.77.0.11', 31002, 21001])

      r = await run(['unregister'])
      assert.equal(r.code, 0, r.stderr)
      assert.deepEqual(pick(JSON.parse(r.stdout), ['state', 'offered']), { state: 'leaving', offered: false })
      // The stake stays locked until the close delay has passed.
      r = await run(['unregister', '--finish'])
      assert.equal(r.code, 1)
      assert.match(r.stderr, new RegExp(`exit code ${ContractExitCode.CloseTooEarly} \\(CloseTooEarly\\)`))

      // Governance: the owner delists another proxy; the record stays on chain.
      const other = await net.wallet('proxy-operator-2', '5')
      const otherKey = loadOrCreateWalletKey(path.join(net.dir, 'proxy-payment-2.key'))
      await new ProxyRegistry(net.chain, other.wallet, otherKey, root).register({ host: 'p2.example', workerPort: 1, clientPort: 2 }, { imageHash: PROXY_IMAGE })
      const otherHex = otherKey.publicKey.toString('hex')
      r = await cli(['delist-proxy', '--public-key', otherHex, '--reason', '7', '--wallet-key', other.keyFile])
      assert.equal(r.code, 1)
      assert.match(r.stderr, /NotOwner/)
      r = await cli(['delist-proxy', '--public-key', otherHex, '--reason', '7', '--wallet-key', ownerKey])
      assert.equal(r.code, 0, r.stderr)
      const st = await net.chain.getRootState(root)
      assert.equal(st.proxies.get(otherHex)?.state, 'delisted')
      assert.equal(st.delisted.get(otherHex)?.reason, 7)
      r = await cli(['show', '--json'])
      const shown = JSON.parse(r.stdout)
      assert.deepEqual(shown.delisted.map((d: { publicKey: string }) => d.publicKey), [otherHex])
      assert.equal(shown.proxies.find((p: { publicKey: string }) => p.publicKey === otherHex).offered, false)
    })

    it('refuses a non-owner with exit code 1 and the contract’s exit code named', async () => {
      const { keyFile } = await net.wallet('intruder', '2')
      const r = await cli(['allow-model', hash(0x77), '--wallet-key', keyFile])
      assert.equal(r.code, 1)
      assert.match(r.stderr, new RegExp(`exit code ${ContractExitCode.NotOwner} \\(NotOwner\\)`))
      assert.ok(!(await net.chain.getRootState(root)).modelHashes.includes(hash(0x77)))
    })

    it('exits 2 on usage errors, naming what is wrong', async () => {
      const cases: Array<[string[], RegExp]> = [
        [['allow-image', hash(1), '--wallet-key', ownerKey], /--role proxy\|worker is required/],
        [['allow-model', 'abc', '--wallet-key', ownerKey], /64 hex characters/],
        [['allow-model', hash(1)], /--wallet-key FILE/],
        [['set-params', '--wallet-key', ownerKey], /at least one parameter flag/],
        [['set-params', '--prompt-mult', '-1', '--wallet-key', ownerKey], /prompt-mult/],
        [['frobnicate'], /unknown command/],
        [['show', '--bogus'], /bogus/],
        [['allow-model', hash(1), '--wallet-key', path.join(net.dir, 'nope.key')], /no such file/],
      ]
      for (const [args, re] of cases) {
        const r = await cli(args)
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, re)
      }
      const noEndpoint = captureIo({})
      assert.equal(await runRoot(['show', '--root', root.toString()], noEndpoint.io), 2)
      assert.match(noEndpoint.out.stderr, /COCOON_CHAIN_ENDPOINT/)
    })
  })

  describe('wallet CLI', () => {
    it('prints the address, funds it from the faucet, and reads the balance', async () => {
      const key = path.join(net.dir, 'cli-wallet.key')
      const env = { COCOON_CHAIN_ENDPOINT: net.server.endpoint }
      const a = captureIo(env)
      assert.equal(await runWallet(['address', '--key', key, '--json'], a.io), 0, a.out.stderr)
      const { address } = JSON.parse(a.out.stdout)
      const f = captureIo(env)
      assert.equal(await runWallet(['faucet', '--key', key, '--amount', '2.5'], f.io), 0, f.out.stderr)
      assert.match(f.out.stdout, new RegExp(`credited 2.5 TON to ${address}`))
      const b = captureIo(env)
      assert.equal(await runWallet(['balance', '--key', key], b.io), 0, b.out.stderr)
      assert.match(b.out.stdout, /2\.5 TON \(not deployed yet/)
      const u = captureIo({})
      assert.equal(await runWallet(['balance', '--key', key], u.io), 2)
    })
  })
})
