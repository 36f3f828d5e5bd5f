// Reads and sanity-checks attestation policies: which evidence kinds, images and models a node trusts.

import { DEFAULT_MAX_CERT_AGE_SEC } from './constants.ts'
import type { EvidenceKind, Policy, Role } from './types.ts'

const KINDS: readonly EvidenceKind[] = ['tdx', 'simulated', 'none']
const ROLES: readonly Role[] = ['client', 'proxy', 'worker']
const POLICY_FIELDS = new Set(['acceptKinds', 'imageHashes', 'modelHashes', 'tcbStatuses', 'maxCertAgeSec'])

/** A policy document is malformed. `field` is its JSON path, e.g. `imageHashes.worker[2]`. */
export class InvalidPolicyError extends Error {
  readonly name = 'InvalidPolicyError'
  constructor(
    readonly where: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${where}: policy ${field}: ${problem}`)
  }
}

/**
 * Validates a policy read from config (or, later, the root contract) and applies defaults once:
 * `modelHashes` '*', `maxCertAgeSec` DEFAULT_MAX_CERT_AGE_SEC. Hex hashes are lowercased.
 * Unknown fields are errors, so a misspelt restriction cannot silently go unenforced.
 *
 * @param where names the source in error messages, e.g. a file path.
 */
export function parsePolicy(json: unknown, where: string): Policy {
  const fail = (field: string, problem: string): never => {
    throw new InvalidPolicyError(where, field, problem)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('(root)', 'must be an object')
  const o = json as Record<string, unknown>
  for (const k of Object.keys(o)) if (!POLICY_FIELDS.has(k)) fail(k, 'unknown field')

  const acceptKinds = o.acceptKinds
  if (!Array.isArray(acceptKinds) || acceptKinds.length === 0) fail('acceptKinds', `must be a non-empty array of ${KINDS.join(', ')}`)
  ;(acceptKinds as unknown[]).forEach((k, i) => {
    if (!KINDS.includes(k as EvidenceKind)) fail(`acceptKinds[${i}]`, `unknown evidence kind ${JSON.stringify(k)}; expected one of ${KINDS.join(', ')}`)
  })

  const imageHashes: Policy['imageHashes'] = {}
  const ih = o.imageHashes
  if (typeof ih !== 'object' || ih === null || Array.isArray(ih)) fail('imageHashes', 'must be an object keyed by role')
  for (const [role, list] of Object.entries(ih as Record<string, unknown>)) {
    if (!ROLES.includes(role as Role)) fail(`imageHashes.${role}`, `unknown role; expected one of ${ROLES.join(', ')}`)
    imageHashes[role as Role] = hashList(list, `imageHashes.${role}`, fail)
  }

  const modelHashes = o.modelHashes === undefined ? '*' : hashList(o.modelHashes, 'modelHashes', fail)

  let tcbStatuses: string[] | undefined
  if (o.tcbStatuses !== undefined) {
    if (!Array.isArray(o.tcbStatuses) || o.tcbStatuses.length === 0) fail('tcbStatuses', 'must be a non-empty array of strings')
    ;(o.tcbStatuses as unknown[]).forEach((s, i) => {
      if (typeof s !== 'string' || s === '') fail(`tcbStatuses[${i}]`, 'must be a non-empty string such as "UpToDate"')
    })
    tcbStatuses = [...(o.tcbStatuses as string[])]
  }

  const maxCertAgeSec = o.maxCertAgeSec ?? DEFAULT_MAX_CERT_AGE_SEC
  if (!Number.isSafeInteger(maxCertAgeSec) || (maxCertAgeSec as number) <= 0) fail('maxCertAgeSec', 'must be a positive integer (seconds)')

  return {
    acceptKinds: [...new Set(acceptKinds as EvidenceKind[])],
    imageHashes,
    modelHashes,
    ...(tcbStatuses ? { tcbStatuses } : {}),
    maxCertAgeSec: maxCertAgeSec as number,
  }
}

function hashList(x: unknown, field: string, fail: (field: string, problem: string) => never): string[] | '*' {
  if (x === '*') return '*'
  if (!Array.isArray(x)) return fail(field, 'must be "*" or an array of 64-hex-char SHA-256 hashes')
  return x.map((h, i) => {
    if (typeof h !== 'string' || !/^[0-9a-fA-F]{64}$/.test(h)) fail(`${field}[${i}]`, `${JSON.stringify(h)} is not a 64-hex-char SHA-256 hash`)
    return (h as string).toLowerCase()
  })
}

/** Throws InvalidPolicyError if `p` would let a simulated (forgeable) TEE in; call it on every production config. */
export function assertProductionPolicy(p: Policy, where = 'production policy'): void {
  if (p.acceptKinds.includes('simulated')) {
    throw new InvalidPolicyError(where, 'acceptKinds', "accepts 'simulated' evidence, which anyone can forge")
  }
}

/**
 * A policy for local devnets: accepts simulated and TDX evidence and unattested clients.
 * `imageHashes` is per role, or one list (or '*') applied to proxies and workers.
 * Never use it outside a devnet: it trusts forgeable simulated quotes.
 */
export function devnetPolicy(imageHashes: Policy['imageHashes'] | string[] | '*'): Policy {
  const perRole = imageHashes === '*' || Array.isArray(imageHashes) ? { proxy: imageHashes, worker: imageHashes } : imageHashes
  return {
    acceptKinds: ['simulated', 'tdx', 'none'],
    imageHashes: perRole,
    modelHashes: '*',
    maxCertAgeSec: DEFAULT_MAX_CERT_AGE_SEC,
  }
}
