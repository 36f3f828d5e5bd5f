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
