// Shared fixtures for the tee tests: fixed clocks, identities, and re-issuing a certificate with altered contents under a chosen key.

import { createPrivateKey, webcrypto } from 'node:crypto'
import { x509 } from '../../src/tee/x509.ts'
import {
  createIdentity,
  SimulatedEvidenceProvider,
  simulatedImageHash,
  type CreateIdentityOptions,
  type Identity,
} from '../../src/tee/index.ts'

export const T0 = new Date('2025-06-01T00:00:00Z')
export const at = (d: Date, plusSec: number) => () => new Date(d.getTime() + plusSec * 1000)
export const CONFIG_HASH = 'c0'.repeat(32)
export const MODEL_HASH = 'a1'.repeat(32)

export function derOf(pem: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))
}

export async function simulatedProvider(tag = ''): Promise<SimulatedEvidenceProvider> {
  return new SimulatedEvidenceProvider(await simulatedImageHash(tag))
}

export async function workerIdentity(over: Partial<CreateIdentityOptions> = {}): Promise<Identity> {
  return createIdentity({
    role: 'worker',
    provider: await simulatedProvider(),
    configHash: CONFIG_HASH,
    modelId: 'qwen3-0.6b',
    modelHash: MODEL_HASH,
    now: () => T0,
    ...over,
  })
}

export interface Ext {
  oid: string
  critical: boolean
  value: Uint8Array
}

/**
 * Re-signs `id`'s certificate after `edit` changes its extensions, with `signer`'s key (default:
 * the same key). This is what an attacker holding a key can do, so every refusal test starts here.
 */
export async function reissue(
  id: Identity,
  edit: (exts: Ext[]) => Ext[] | Promise<Ext[]> = (e) => e,
  opts: { signer?: Identity; notBefore?: Date; notAfter?: Date } = {},
): Promise<Uint8Array> {
  const old = new x509.X509Certificate(derOf(id.certPem))
  const exts = await edit(old.extensions.map((e) => ({ oid: e.type, critical: e.critical, value: new Uint8Array(e.value) })))
  const signer = opts.signer ?? id
  const pkcs8 = createPrivateKey(signer.keyPem).export({ type: 'pkcs8', format: 'der' })
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign'])
  const publicKey = await webcrypto.subtle.importKey('raw', signer.publicKey, { name: 'Ed25519' }, true, ['verify'])
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: old.subject,
    notBefore: opts.notBefore ?? old.notBefore,
    notAfter: opts.notAfter ?? old.notAfter,
    keys: { privateKey, publicKey } as unknown as CryptoKeyPair,
    signingAlgorithm: { name: 'Ed25519' },
    extensions: exts.map((e) => new x509.Extension(e.oid, e.critical, new Uint8Array(e.value))),
  })
  return new Uint8Array(cert.rawData)
}
