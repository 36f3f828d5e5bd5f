// HTTP load at a fixed concurrency for a fixed time, with autocannon as the generator and our own per-request timings.
//
// autocannon keeps its latency histogram in whole milliseconds and has no time to first byte,
// so each connection is hooked (setupClient): we time every request ourselves with the
// high-resolution clock, from the moment autocannon writes it to the first body byte (TTFB)
// and to the end of the response.
import autocannon, { type AutocannonClient } from 'autocannon'
import { percentile } from './stats.ts'

export interface LoadOptions {
  url: string
  /** JSON request body, sent with POST. */
  body: string
  connections: number
  durationSec: number
}

export interface LoadRun {
  /** Successful (2xx) responses per second over the run. */
  rps: number
  p50Ms: number
  p99Ms: number
  ttfbP50Ms: number
  /** 2xx responses, other responses, and connection errors or timeouts. */
  ok: number
  failed: number
  errors: number
  /** The other responses by HTTP status ("503": 12). */
  failedByStatus: Record<string, number>
}

/** Sampling interval of autocannon's own counters; a run ends at the first tick after its duration. */
const SAMPLE_INTERVAL_MS = 100
const REQUEST_TIMEOUT_SEC = 30

export class LoadFailedError extends Error {
  readonly name = 'LoadFailedError'
  constructor(
    readonly url: string,
    readonly failed: number,
    readonly errors: number,
    detail?: string,
  ) {
    super(`load on ${url} got no successful response (${failed} failed responses, ${errors} errors)${detail ? `: ${detail}` : ''}`)
  }
}

export async function runLoad(o: LoadOptions): Promise<LoadRun> {
  const latencies: number[] = []
  const ttfbs: number[] = []
  let failed = 0
  const failedByStatus: Record<string, number> = {}
  const setupClient = (client: AutocannonClient) => {
    // autocannon writes one request at a time per connection (pipelining 1), so one pending timer each.
    let sentAt = 0n
    let ttfbMs = NaN
    client.on('request', () => {
      sentAt = process.hrtime.bigint()
      ttfbMs = NaN
    })
    client.on('body', () => {
      if (Number.isNaN(ttfbMs)) ttfbMs = Number(process.hrtime.bigint() - sentAt) / 1e6
    })
    client.on('response', (status: number) => {
      const totalMs = Number(process.hrtime.bigint() - sentAt) / 1e6
      if (status >= 200 && status < 300) {
        latencies.push(totalMs)
        if (!Number.isNaN(ttfbMs)) ttfbs.push(ttfbMs)
      } else {
        failed++
        failedByStatus[status] = (failedByStatus[status] ?? 0) + 1
      }
    })
  }
  const result = await autocannon({
    url: o.url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: o.body,
    connections: o.connections,
    duration: o.durationSec,
    pipelining: 1,
    timeout: REQUEST_TIMEOUT_SEC,
    sampleInt: SAMPLE_INTERVAL_MS,
    setupClient,
  })
  const errors = result.errors + result.timeouts
  if (latencies.length === 0) throw new LoadFailedError(o.url, failed, errors)
  return {
    rps: latencies.length / result.duration,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    ttfbP50Ms: percentile(ttfbs, 50),
    ok: latencies.length,
    failed,
    errors,
    failedByStatus,
  }
}
