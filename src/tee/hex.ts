// Hex helpers shared by the attestation modules; lowercase is the only form we emit or accept on the wire.

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** True for lowercase hex of exactly `bytes` bytes. */
export function isHex(s: unknown, bytes: number): s is string {
  return typeof s === 'string' && s.length === bytes * 2 && /^[0-9a-f]*$/.test(s)
}
