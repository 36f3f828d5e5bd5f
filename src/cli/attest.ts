// `cocoon attest`: inspect certificates and quotes, verify TDX quotes, and produce quotes inside a TDX guest.
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { describeCertificate, parseAttestedCert, simulatedImageHash } from '../tee/index.ts'

function pemToDer(pem: string): Uint8Array {
  const b64 = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '')
  return new Uint8Array(Buffer.from(b64, 'base64'))
}

export class UsageError extends Error {
  readonly name = 'UsageError'
}

export async function runAttest(argv: string[]): Promise<number> {
  const [sub, ...args] = argv
  if (sub === 'inspect') {
    const { positionals } = parseArgs({ args, allowPositionals: true, strict: true })
    if (positionals.length !== 1) throw new UsageError('usage: cocoon attest inspect <cert.pem|quote-file>')
    const bytes = fs.readFileSync(positionals[0])
    const text = bytes.toString('latin1')
    // A quote embeds its PEM PCK chain, so only a leading PEM header (or DER's SEQUENCE tag) means a certificate.
    const isCert = text.trimStart().startsWith('-----BEGIN CERTIFICATE-----') || bytes[0] === 0x30
    let out: unknown
    if (isCert) {
      const input = text.trimStart().startsWith('-----BEGIN') ? text : new Uint8Array(bytes)
      const cert = await describeCertificate(input)
      out = cert
      // A TDX certificate's quote gets the same detail as a quote file.
      const der = text.trimStart().startsWith('-----BEGIN') ? pemToDer(text) : new Uint8Array(bytes)
      const parsed = await parseAttestedCert(der).catch(() => undefined)
      if (parsed?.kind === 'tdx' && parsed.quote) {
        const { describeQuote } = await import('./attest-tdx.ts')
        out = { ...cert, tdxQuote: describeQuote(parsed.quote) }
      }
    }
    else {
      const { describeQuote } = await import('./attest-tdx.ts')
      out = describeQuote(new Uint8Array(bytes))
    }
    process.stdout.write(JSON.stringify(out, null, 2) + '\n')
    return 0
  }
  if (sub === 'verify') {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: { collateral: { type: 'string' }, now: { type: 'string' }, json: { type: 'boolean', default: false } },
    })
    if (positionals.length !== 1) throw new UsageError('usage: cocoon attest verify <quote-file> [--collateral FILE] [--now ISO-8601] [--json]')
    const { attestVerify } = await import('./attest-tdx.ts')
    return attestVerify({ quoteFile: positionals[0], collateralFile: values.collateral, now: values.now, json: values.json })
  }
  if (sub === 'quote') {
    const { values } = parseArgs({ args, strict: true, options: { 'report-data': { type: 'string' }, out: { type: 'string' } } })
    if (!values['report-data']) throw new UsageError('usage: cocoon attest quote --report-data HEX [--out FILE]')
    const { attestQuote } = await import('./attest-tdx.ts')
    return attestQuote({ reportDataHex: values['report-data'], out: values.out })
  }
  if (sub === 'image') {
    // What a node of this checkout on a simulated TEE (`tee.imageTag` = --tag) presents as its image hash: the hash
    // a root's owner allows (`cocoon root allow-image`) before such proxies and workers are trusted.
    const { values } = parseArgs({ args, strict: true, options: { tag: { type: 'string', default: '' } } })
    process.stdout.write((await simulatedImageHash(values.tag!)) + '\n')
    return 0
  }
  throw new UsageError('usage: cocoon attest inspect|verify|quote|image …')
}
