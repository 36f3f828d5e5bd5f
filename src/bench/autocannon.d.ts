// The part of autocannon's API the bench uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  /** One connection. Events: 'request' (about to write a request), 'body' (response body bytes parsed), 'response' (statusCode, bytes, durationMs). */
  export interface AutocannonClient extends EventEmitter {}

  export interface AutocannonOptions {
    url: string
    method?: string
    headers?: Record<string, string>
    body?: string | Buffer
    connections?: number
    /** Seconds. */
    duration?: number
    pipelining?: number
    /** Seconds a request may take before it counts as a timeout. */
    timeout?: number
    /** Interval of the per-second samples, ms. */
    sampleInt?: number
    setupClient?: (client: AutocannonClient) => void
  }

  export interface AutocannonResult {
    /** Seconds the run lasted. */
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    '2xx': number
    latency: { p50: number; p99: number }
  }

  function autocannon(opts: AutocannonOptions): EventEmitter & PromiseLike<AutocannonResult>
  export default autocannon
}
