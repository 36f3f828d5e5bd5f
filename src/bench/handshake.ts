// Attested handshakes: new RA-TLS connections (TLS 1.3 + mutual evidence checks) per second, and their p50 time.
//
// Both ends run in this process over loopback, through the nodes' own code: listenAttested on
// one side (a proxy), dialAttested on the other (a worker), each verifying the other with
// createPeerVerifier. A handshake is timed from the dial until the listener, having verified
// the dialler, sends one byte back; so it includes both ends' verification. The verifier's
// whole-certificate cache is off, so every handshake parses and checks the certificate.
//
// TDX uses the real quote and collateral from the fixtures, verified by TdxEvidenceVerifier
// with the clock set inside the collateral's validity window. That quote was made for some
// other key, so its report data cannot bind our certificate's claims: the one comparison of
// report data with the claims is stood in for (FixtureBoundVerifier); the DCAP verification,
// certificate parsing, signature, policy and TCB checks are all real.
import fs from 'node:fs'
import path from 'node:path'
import { dialAttested, listenAttested, type PeerVerifier } from '../net/attested.ts'
import { silentLogger } from '../core/log.ts'
import { createIdentity, encodeClaims, reportDataFor, fixedIdentity, DEFAULT_MAX_CERT_AGE_SEC, toHex, SimulatedEvidenceProvider, SimulatedEvidenceVerifier, simulatedImageHash, type EvidenceProvider, type EvidenceVerifier, type Identity, type Policy, type VerifiedEvidence, createPeerVerifier } from '../tee/index.ts'
import type { BenchPlan } from './constants.ts'
import type { BenchResult } from './schema.ts'
import { elapsedMs, percentile, round } from './stats.ts'

export interface HandshakeOptions {
  plan: BenchPlan
  /** Folder with tdx_quote, tdx_quote_collateral.json and SOURCE.md (which gives a clock inside the collateral's window). */
  tdxFixturesDir: string
  say: (line: string) => void
}

const CONFIG_HASH = '00'.repeat(32)
/** Unmeasured handshakes before each measured series. */
const WARMUP_HANDSHAKES = 5

interface Ends {
  /** The listening side (a proxy) and how it checks the dialler. */
  server: { identity: Identity; verify: PeerVerifier }
  /** The dialling side (a worker) and how it checks the listener. */
  client: { identity: Identity; verify: PeerVerifier }
}

export async function measureHandshakes(o: HandshakeOptions): Promise<{ handshake: BenchResult['handshake']; notes: string[] }> {
  const notes: string[] = []
  o.say(`handshakes: simulated evidence, ${o.plan.handshakeSec}s`)
  const simulated = await measureSimulated(o.plan.handshakeSec)
  const tdx = await measureTdx(o)
  if ('note' in tdx) notes.push(tdx.note)
  else notes.push(`TDX handshakes: the fixture quote verified with the clock at ${tdx.clock}; its report data is taken as bound to our claims (the quote was made for another key)`)
  return {
    handshake: {
      simulated: { perSec: round(simulated.perSec, 1), p50Ms: round(simulated.p50Ms, 3) },
      tdxCold: { p50Ms: 'note' in tdx ? null : round(tdx.coldP50Ms, 3) },
      tdxCached: { p50Ms: 'note' in tdx ? null : round(tdx.cachedP50Ms, 3) },
    },
    notes,
  }
}

async function measureSimulated(durationSec: number): Promise<{ perSec: number; p50Ms: number }> {
  const image = await simulatedImageHash('')
  const provider = new SimulatedEvidenceProvider(image)
  const policy: Policy = { acceptKinds: ['simulated'], imageHashes: { proxy: [image], worker: [image] }, modelHashes: '*', maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC }
  const verifiers = { simulated: new SimulatedEvidenceVerifier() }
  const ends: Ends = {
    server: { identity: await createIdentity({ role: 'proxy', provider, configHash: CONFIG_HASH }), verify: createPeerVerifier(policy, verifiers, { cacheTtlMs: 0 }) },
    client: { identity: await createIdentity({ role: 'worker', provider, configHash: CONFIG_HASH }), verify: createPeerVerifier(policy, verifiers, { cacheTtlMs: 0 }) },
  }
  return withListener(ends, async (shake) => {
    for (let i = 0; i < WARMUP_HANDSHAKES; i++) await shake()
    const samples: number[] = []
    const start = performance.now()
    while (elapsedMs(start) < durationSec * 1000) samples.push(await shake())
    return { perSec: samples.length / (elapsedMs(start) / 1000), p50Ms: percentile(samples, 50) }
  })
}

interface TdxFixture {
  quote: Uint8Array
  collateralText: string
  now: Date
}

async function measureTdx(o: HandshakeOptions): Promise<{ coldP50Ms: number; cachedP50Ms: number; clock: string } | { note: string }> {
  const fixture = loadTdxFixture(o.tdxFixturesDir)
  if ('note' in fixture) return fixture
  let tdx: typeof import('../tee/tdx/index.ts')
  try {
    tdx = await import('../tee/tdx/index.ts')
  } catch (err) {
    return { note: `TDX handshakes not measured: the TDX verifier (src/tee/tdx) did not load: ${(err as Error).message}` }
  }
  const now = () => fixture.now
  let newTdxVerifier: () => EvidenceVerifier
  try {
    const collateral = tdx.parseCollateralJson(fixture.collateralText)
    newTdxVerifier = () => new tdx.TdxEvidenceVerifier({ collateral })
    await newTdxVerifier().verify(fixture.quote, { now: fixture.now })
  } catch (err) {
    return { note: `TDX handshakes not measured: the fixture quote does not verify at ${fixture.now.toISOString()}: ${(err as Error).message}` }
  }
  const provider: EvidenceProvider = { kind: 'tdx', quote: async () => fixture.quote }
  const identity = (role: 'proxy' | 'worker') => createIdentity({ role, provider, configHash: CONFIG_HASH, now })
  const server = await identity('proxy')
  const client = await identity('worker')
  const policy: Policy = { acceptKinds: ['tdx'], imageHashes: { proxy: '*', worker: '*' }, modelHashes: '*', tcbStatuses: ['UpToDate'], maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC }
  // Each end is its own node with its own TDX verifier; the dialler checks the server and vice versa.
  const ends = (serverTdx: EvidenceVerifier, clientTdx: EvidenceVerifier): Ends => ({
    server: { identity: server, verify: createPeerVerifier(policy, { tdx: new FixtureBoundVerifier(serverTdx, client) }, { cacheTtlMs: 0, now }) },
    client: { identity: client, verify: createPeerVerifier(policy, { tdx: new FixtureBoundVerifier(clientTdx, server) }, { cacheTtlMs: 0, now }) },
  })

  o.say(`handshakes: TDX, cold verification, ${o.plan.tdxColdHandshakes} handshakes`)
  // A fresh pair of verifiers before every handshake: nothing cached, a full DCAP check on each end.
  const current = { ends: ends(newTdxVerifier(), newTdxVerifier()) }
  const coldSamples = await withListener(current, async (shake) => {
    const samples: number[] = []
    for (let i = 0; i < o.plan.tdxColdHandshakes; i++) {
      current.ends = ends(newTdxVerifier(), newTdxVerifier())
      samples.push(await shake())
    }
    return samples
  })

  o.say(`handshakes: TDX, cached verdict, ${o.plan.tdxCachedHandshakes} handshakes`)
  const cachedSamples = await withListener(ends(newTdxVerifier(), newTdxVerifier()), async (shake) => {
    for (let i = 0; i < WARMUP_HANDSHAKES; i++) await shake()
    const samples: number[] = []
    for (let i = 0; i < o.plan.tdxCachedHandshakes; i++) samples.push(await shake())
    return samples
  })
  return { coldP50Ms: percentile(coldSamples, 50), cachedP50Ms: percentile(cachedSamples, 50), clock: fixture.now.toISOString() }
}

/**
 * A real TDX verifier whose verdict is taken as binding the given peer's claims. Only for the
 * fixture quote, which was produced for another key (see the module comment).
 */
class FixtureBoundVerifier implements EvidenceVerifier {
  readonly kind = 'tdx' as const
  private readonly reportData: string

  constructor(
    private readonly inner: EvidenceVerifier,
    peer: Identity,
  ) {
    this.reportData = toHex(reportDataFor(encodeClaims(peer.claims)))
  }

  async verify(quote: Uint8Array, opts?: { now?: Date; signal?: AbortSignal }): Promise<VerifiedEvidence> {
    return { ...(await this.inner.verify(quote, opts)), reportData: this.reportData }
  }
}

/** Reads the fixture quote, its collateral, and the clock SOURCE.md says it verifies at. */
function loadTdxFixture(dir: string): TdxFixture | { note: string } {
  const file = (name: string) => path.join(dir, name)
  try {
    const quote = new Uint8Array(fs.readFileSync(file('tdx_quote')))
    const collateralText = fs.readFileSync(file('tdx_quote_collateral.json'), 'utf8')
    const source = fs.readFileSync(file('SOURCE.md'), 'utf8')
    const m = /clock is set to\s+`?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)/.exec(source)
    if (!m) return { note: `TDX handshakes not measured: ${file('SOURCE.md')} names no clock ("clock is set to <ISO time>") inside the collateral's validity` }
    return { quote, collateralText, now: new Date(m[1]) }
  } catch (err) {
    return { note: `TDX handshakes not measured: no TDX fixtures in ${dir} (${(err as Error).message})` }
  }
}

/**
 * Runs `fn` with a listener on a free loopback port; `shake()` performs one attested handshake
 * and returns its duration in ms. `ends` may be a holder whose `ends` field changes between
 * handshakes (the verifiers; the listener keeps the identity it started with).
 */
async function withListener<T>(endsOrHolder: Ends | { ends: Ends }, fn: (shake: () => Promise<number>) => Promise<T>): Promise<T> {
  const get = () => ('ends' in endsOrHolder ? endsOrHolder.ends : endsOrHolder)
  let refusal: string | undefined
  const server = await listenAttested({
    host: '127.0.0.1',
    port: 0,
    identity: fixedIdentity(get().server.identity),
    verify: (der, role) => get().server.verify(der, role),
    expectedRole: 'worker',
    log: silentLogger,
    // The dialler waits for this byte: it proves the listener has verified it too.
    onPeer: ({ socket }) => socket.end('k'),
    onRefused: (reason) => (refusal = reason),
  })
  const port = (server.address() as { port: number }).port
  const shake = async () => {
    const start = performance.now()
    const { socket } = await dialAttested({ host: '127.0.0.1', port, identity: get().client.identity, verify: get().client.verify, expectedRole: 'proxy' })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('data', () => resolve())
        socket.once('error', reject)
        socket.once('close', () => reject(new Error(`the listener closed the connection: ${refusal ?? 'no reason given'}`)))
      })
    } finally {
      socket.destroy()
    }
    return elapsedMs(start)
  }
  try {
    return await fn(shake)
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
