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
    const onError = (err: Error) => {
      cleanup()
      reject(err)
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

/** Parses a JSON object body; anything else is a 400 that says what was wrong. */
export function parseJsonObject(buf: Buffer): Record<string, unknown> {
  if (buf.length === 0) throw new InvalidRequestError('request body is empty; expected a JSON object')
  let v: unknown
  try {
    v = JSON.parse(buf.toString('utf8'))
  } catch (err) {
    throw new InvalidRequestError(`request body is not valid JSON: ${(err as Error).message}`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new InvalidRequestError('request body must be a JSON object')
  return v as Record<string, unknown>
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
