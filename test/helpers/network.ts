// Builds an in-process network (proxies, workers, client) on loopback with real RA-TLS and HTTP/2, for protocol tests.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createIdentity } from '../../src/tee/cert.ts'
import { Ledger } from '../../src/payments/ledger.ts'
import { ProxyBilling } from '../../src/payments/billing.ts'
import { PartyLedger } from '../../src/payments/party-ledger.ts'
import { OFFCHAIN_PRICE_PARAMS } from '../../src/payments/pricing.ts'
import { fixedIdentity, type IdentitySource } from '../../src/tee/renew.ts'
import { SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash } from '../../src/tee/simulated.ts'
import { createPeerVerifier } from '../../src/tee/verify.ts'
import type { Policy } from '../../src/tee/types.ts'
import { createProxy, type Proxy, type ProxyOptions } from '../../src/proxy/proxy.ts'
import { createWorker, type Worker, type WorkerOptions } from '../../src/worker/worker.ts'
import { createClient, type Client, type ClientDeps, type ClientOptions } from '../../src/client/client.ts'
import type { InferenceBackend } from '../../src/inference/types.ts'
import { silentLogger, createLogger, type Logger } from '../../src/core/log.ts'
import type { Identity } from '../../src/tee/types.ts'
import { HpkeKeyRing } from '../../src/net/e2ee.ts'

const log = process.env.COCOON_TEST_LOGS ? createLogger({}, 'debug') : silentLogger

export async function policyFor(opts: { proxyTags?: string[]; workerTags?: string[] } = {}): Promise<Policy> {
  const proxy = await Promise.all((opts.proxyTags ?? ['']).map((t) => simulatedImageHash(t)))
  const worker = await Promise.all((opts.workerTags ?? ['']).map((t) => simulatedImageHash(t)))
  return { acceptKinds: ['simulated', 'none'], imageHashes: { proxy, worker, client: '*' }, modelHashes: '*', maxCertAgeSec: 86_400 }
}

function verifierFor(policy: Policy) {
  const v = createPeerVerifier(policy, { simulated: new SimulatedEvidenceVerifier() }, { cacheTtlMs: 60_000 })
  return (der: Uint8Array, role: 'client' | 'proxy' | 'worker') => v(der, role)
}

/** Billing with a fresh ledger in a temp dir and the off-chain prices: everyone is admitted. */
export function offchainBilling(): ProxyBilling {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-ledger-'))
  return new ProxyBilling({ ledger: new Ledger(path.join(dir, 'ledger.sqlite')), params: () => OFFCHAIN_PRICE_PARAMS, log })
}

export async function startProxy(opts: { policy?: Policy; imageTag?: string; options?: Partial<ProxyOptions>; identity?: IdentitySource; billing?: ProxyBilling; log?: Logger } = {}): Promise<{ proxy: Proxy; workerPort: number; clientPort: number }> {
  const identity = opts.identity ?? fixedIdentity(await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash(opts.imageTag ?? '')), configHash: '00'.repeat(32) }))
  const proxy = createProxy(
    { workerListen: { host: '127.0.0.1', port: 0 }, clientListen: { host: '127.0.0.1', port: 0 }, ...opts.options },
    { identity, verify: verifierFor(opts.policy ?? (await policyFor())), log: opts.log ?? log.child({ role: 'proxy' }), billing: opts.billing ?? offchainBilling() },
  )
  const ports = await proxy.start()
  return { proxy, ...ports }
}

export async function startWorker(backend: InferenceBackend, proxyPorts: number[], opts: { policy?: Policy; imageTag?: string; options?: Partial<WorkerOptions>; ledger?: PartyLedger; e2ee?: boolean } = {}): Promise<Worker> {
  // Like a real worker, an HPKE key in its claims unless told to act as a worker from before E2EE.
  const hpke = opts.e2ee === false ? undefined : new HpkeKeyRing(3_600_000)
  const identity = await createIdentity({
    hpkeKey: await hpke?.rotate(),
    role: 'worker',
    provider: new SimulatedEvidenceProvider(await simulatedImageHash(opts.imageTag ?? '')),
    configHash: '00'.repeat(32),
    modelId: backend.model.id,
    modelHash: backend.model.hash || undefined,
  })
  const worker = createWorker(
    { proxies: proxyPorts.map((port) => ({ host: '127.0.0.1', port })), ...opts.options },
    { backend, identity: fixedIdentity(identity), verify: verifierFor(opts.policy ?? (await policyFor())), log: log.child({ role: 'worker' }), ledger: opts.ledger, hpke },
  )
  worker.start()
  return worker
}

export async function startClient(proxyPorts: number[], opts: { policy?: Policy; options?: Partial<ClientOptions>; ledger?: PartyLedger; identity?: Identity; log?: Logger; funded?: ClientDeps['funded']; deps?: Partial<ClientDeps> } = {}): Promise<{ client: Client; url: string }> {
  const identity = opts.identity ?? (await createIdentity({ role: 'client', configHash: '00'.repeat(32) }))
  const client = createClient(
    { listen: { host: '127.0.0.1', port: 0 }, proxies: proxyPorts.map((port) => ({ host: '127.0.0.1', port })), ...opts.options },
    { identity: fixedIdentity(identity), verify: verifierFor(opts.policy ?? (await policyFor())), log: opts.log ?? log.child({ role: 'client' }), ledger: opts.ledger, funded: opts.funded, ...opts.deps },
  )
  const port = await client.start()
  return { client, url: `http://127.0.0.1:${port}` }
}

/** Polls `cond` every 20 ms until it holds or `timeoutMs` passes (then throws with `what`). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Reads an SSE response into its data payloads (strings), until the stream ends. */
export async function readSse(res: Response): Promise<string[]> {
  const text = await res.text()
  return text
    .split('\n\n')
    .map((e) => e.trim())
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6))
}

/** A client's or worker's ledger in a fresh temp dir. */
export function partyLedger(): PartyLedger {
  return new PartyLedger(path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cocoon-party-')), 'ledger.sqlite'))
}

/**
 * A FAKE proxy driven by hand: a bare attested proxy identity (claiming `paymentKey`) that accepts one
 * worker and lets the test send it statements. For testing what a worker does with what a proxy says.
 */
export async function handDrivenProxy(paymentKeyHex: string): Promise<{
  port: number
  connected: () => boolean
  sendStatement(st: unknown): Promise<any>
  /** Sends the worker any request, as a proxy (a hostile one, if the test likes), and reads its status and body. */
  request(headers: Record<string, string>, body: string): Promise<{ status: number; body: string }>
  close(): void
}> {
  const http2 = await import('node:http2')
  const { listenAttested } = await import('../../src/net/attested.ts')
  const identity = await createIdentity({ role: 'proxy', provider: new SimulatedEvidenceProvider(await simulatedImageHash('')), configHash: '00'.repeat(32), paymentKey: paymentKeyHex })
  let session: import('node:http2').ClientHttp2Session | undefined
  const server = await listenAttested({
    host: '127.0.0.1',
    port: 0,
    identity: fixedIdentity(identity),
    verify: verifierFor(await policyFor()),
    expectedRole: 'worker',
    log,
    onPeer: ({ socket }) => (session = http2.connect('https://w', { createConnection: () => socket })),
  })
  return {
    port: (server.address() as { port: number }).port,
    connected: () => session !== undefined && !session.closed,
    sendStatement: (st) =>
      new Promise((resolve, reject) => {
        const r = session!.request({ ':method': 'POST', ':path': '/cocoon/v1/statement' })
        let body = ''
        r.on('data', (c) => (body += c))
        r.on('end', () => resolve(JSON.parse(body)))
        r.on('error', reject)
        r.end(JSON.stringify(st))
      }),
    request: (headers, body) =>
      new Promise((resolve, reject) => {
        const r = session!.request(headers)
        let status = 0
        let text = ''
        r.on('response', (h) => (status = Number(h[':status'])))
        r.on('data', (c) => (text += c))
        r.on('end', () => resolve({ status, body: text }))
        r.on('error', reject)
        r.end(body)
      }),
    close: () => {
      session?.destroy()
      server.close()
    },
  }
}
