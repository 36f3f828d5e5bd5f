// Reading request bodies with a size limit, and parsing them as JSON objects with OpenAI-style errors.
import type { Readable } from 'node:stream'
import { InvalidRequestError, PayloadTooLargeError } from './errors.ts'

/** Reads the whole stream, failing fast (without reading on) once `limitBytes` is exceeded. */
export function readBody(stream: Readable, limitBytes: number, declaredLength?: number): Promise<Buffer> {
  if (declaredLength !== undefined && declaredLength > limitBytes) {
    stream.resume()
    return Promise.reject(new PayloadTooLargeError(limitBytes))
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let size = 0
    const onData = (c: Buffer) => {
      size += c.length
      if (size > limitBytes) {
        cleanup()
        stream.resume()
        reject(new PayloadTooLargeError(limitBytes))
        return
      }
      parts.push(c)
    }
    const onEnd = () => {
      cleanup()
      resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts, size))
    }
    const onError = () => {
      cleanup()
      // The sender went away mid-body (e.g. 'aborted'): the request's fault, not ours.
      reject(new InvalidRequestError('request body was cut off'))
    }
    const onClose = () => {
      cleanup()
      reject(new InvalidRequestError('request body was cut off'))
    }
    const cleanup = () => {
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onError)
      stream.off('close', onClose)
    }
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onError)
    stream.on('close', onClose)
  })
}

/** Deepest nesting of arrays and objects accepted in a request body (OpenAI's own schemas stay far below). */
export const MAX_JSON_DEPTH = 100

/**
 * Parses a JSON object body; anything else is a 400 that says what was wrong. Refuses nesting deeper
 * than MAX_JSON_DEPTH (which would overflow the stack of whatever walks the value next) and numbers
 * that JSON.parse turns into ±Infinity (like 1e309), naming the field, instead of letting a later
 * JSON.stringify turn them into null and so into a default.
 */
export function parseJsonObject(buf: Buffer): Record<string, unknown> {
  if (buf.length === 0) throw new InvalidRequestError('request body is empty; expected a JSON object')
  if (buf.length > MAX_JSON_DEPTH && nestingExceeds(buf, MAX_JSON_DEPTH)) throw new InvalidRequestError(`request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`)
  let v: unknown
  try {
    v = JSON.parse(buf.toString('utf8'))
  } catch (err) {
    throw new InvalidRequestError(`request body is not valid JSON: ${truncate((err as Error).message, 200)}`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new InvalidRequestError('request body must be a JSON object')
  const bad = nonFinitePath(v, '')
  if (bad !== undefined) throw new InvalidRequestError(`'${bad}' must be a finite number`, bad)
  return v as Record<string, unknown>
}

/** Does the JSON text nest deeper than `max`? A byte scan that skips strings; it needs no parse and no recursion. */
export function nestingExceeds(buf: Uint8Array, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped byte
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return false
}

/** The path of the first non-finite number in a parsed value (depth already bounded), e.g. `messages[0].x`. */
function nonFinitePath(v: unknown, path: string): string | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? undefined : path || '(body)'
  if (v === null || typeof v !== 'object') return undefined
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = typeof v[i] === 'number' || (v[i] !== null && typeof v[i] === 'object') ? nonFinitePath(v[i], `${path}[${i}]`) : undefined
      if (p !== undefined) return p
    }
    return undefined
  }
  for (const k in v as Record<string, unknown>) {
    const x = (v as Record<string, unknown>)[k]
    if (typeof x !== 'number' && (x === null || typeof x !== 'object')) continue
    const p = nonFinitePath(x, path ? `${path}.${truncate(k, 64)}` : truncate(k, 64))
    if (p !== undefined) return p
  }
  return undefined
}

function truncate(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max)}…` : s
}

/**
 * Reads and drops the rest of a body, so an early answer (an error before the body was needed) is not
 * cut off by a stream reset. Resolves at its end, once it closes, or once more than `limitBytes` came.
 */
export function discardBody(stream: Readable, limitBytes: number): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    let size = 0
    const done = () => {
      stream.off('data', onData)
      stream.off('end', done)
      stream.off('close', done)
      stream.off('error', done)
      resolve()
    }
    const onData = (c: Buffer) => {
      size += c.length
      if (size > limitBytes) done()
    }
    stream.on('data', onData)
    stream.on('end', done)
    stream.on('close', done)
    stream.on('error', done)
    stream.resume()
  })
}

/** Parses a multipart/form-data body with the web-standard parser; anything else is a 400. */
export async function parseMultipart(buf: Buffer, contentType: string | undefined): Promise<FormData> {
  if (!contentType || !/^multipart\/form-data\s*;.*boundary=/i.test(contentType)) {
    throw new InvalidRequestError("this endpoint takes multipart/form-data (a 'file' and a 'model' field)")
  }
  try {
    return await new Request('http://cocoon.invalid/', { method: 'POST', headers: { 'content-type': contentType }, body: new Blob([new Uint8Array(buf)]) }).formData()
  } catch (err) {
    throw new InvalidRequestError(`the multipart body could not be parsed: ${(err as Error).message.slice(0, 200)}`)
  }
}
