// Inference speed: the embedded llama backend called in-process versus the same backend behind client → proxy → worker.
//
// The in-process backend is built from the devnet worker's own backend settings (model,
// threads, parallel sequences), so both sides run the same configuration; the requests are
// greedy, so both generate the same tokens. Tokens per second = completion tokens / wall time
// from sending the request to the end of the answer.
import { randomUUID } from 'node:crypto'
import { createBackend, type InferenceBackend, type LlamaBackendConfig } from '../inference/index.ts'
import { validateRequest } from '../net/validate.ts'
import { INFERENCE_CONCURRENCY, INFERENCE_PROMPT, type BenchPlan } from './constants.ts'
import type { BenchResult } from './schema.ts'
import { elapsedMs, median, round } from './stats.ts'

export interface InferenceOptions {
  /** The client node's root URL. */
  clientUrl: string
  /** The llama worker's model id and backend settings. */
  modelId: string
  backend: LlamaBackendConfig
  plan: BenchPlan
  say: (line: string) => void
}

type Target = 'direct' | 'network'

interface Generation {
  tokens: number
  ms: number
}

const WARMUP_MAX_TOKENS = 16
const NETWORK_TIMEOUT_MS = 300_000

export async function measureInference(o: InferenceOptions): Promise<{ inference: BenchResult['inference']; notes: string[] }> {
  const notes: string[] = []
  o.say(`inference: loading ${o.modelId} in-process (threads ${o.backend.threads ?? 'default'}, parallel ${o.backend.parallel ?? 'default'})`)
  const backend = await createBackend({
    kind: 'llama',
    model: o.backend.model,
    modelId: o.modelId,
    threads: o.backend.threads,
    contextSize: o.backend.contextSize,
    parallel: o.backend.parallel,
  })
  try {
    const body = (maxTokens: number) => ({ model: o.modelId, prompt: INFERENCE_PROMPT, max_tokens: maxTokens, temperature: 0, stream: true })
    const generate = (t: Target, maxTokens: number) => (t === 'direct' ? direct(backend, body(maxTokens)) : network(o.clientUrl, body(maxTokens)))
    for (const t of ['direct', 'network'] as const) await generate(t, WARMUP_MAX_TOKENS)

    const single: Record<Target, number[]> = { direct: [], network: [] }
    const concurrent: Record<Target, number[]> = { direct: [], network: [] }
    const tokens: Record<Target, Set<number>> = { direct: new Set(), network: new Set() }
    const order = (n: number): Target[] => (n % 2 === 0 ? ['direct', 'network'] : ['network', 'direct'])
    for (let i = 0; i < o.plan.rounds; i++) {
      for (const t of order(i)) {
        o.say(`inference: ${t}, 1 stream x ${o.plan.inferenceSequential} (round ${i + 1}/${o.plan.rounds})`)
        let sum: Generation = { tokens: 0, ms: 0 }
        for (let k = 0; k < o.plan.inferenceSequential; k++) {
          const g = await generate(t, o.plan.inferenceMaxTokens)
          tokens[t].add(g.tokens)
          sum = { tokens: sum.tokens + g.tokens, ms: sum.ms + g.ms }
        }
        single[t].push(tokPerSec(sum))
      }
      for (const t of order(i)) {
        o.say(`inference: ${t}, ${INFERENCE_CONCURRENCY} concurrent streams (round ${i + 1}/${o.plan.rounds})`)
        const start = performance.now()
        const gens = await Promise.all(Array.from({ length: INFERENCE_CONCURRENCY }, () => generate(t, o.plan.inferenceMaxTokens)))
        concurrent[t].push(tokPerSec({ tokens: gens.reduce((s, g) => s + g.tokens, 0), ms: elapsedMs(start) }))
      }
    }
    const [d, n] = [[...tokens.direct].join('/'), [...tokens.network].join('/')]
    if (d !== n) notes.push(`inference: direct streams generated ${d} tokens, network streams ${n}; the speeds are per token, so they still compare`)
    const directTokPerSec = round(median(single.direct), 1)
    const networkTokPerSec = round(median(single.network), 1)
    return {
      inference: {
        directTokPerSec,
        networkTokPerSec,
        ratio: round(networkTokPerSec / directTokPerSec, 3),
        concurrent4: { directTokPerSec: round(median(concurrent.direct), 1), networkTokPerSec: round(median(concurrent.network), 1) },
      },
      notes,
    }
  } finally {
    await backend.close()
  }
}

function tokPerSec(g: Generation): number {
  return g.tokens / (g.ms / 1000)
}

/** One generation on the in-process backend, validated exactly as the worker validates it. */
async function direct(backend: InferenceBackend, body: Record<string, unknown>): Promise<Generation> {
  const start = performance.now()
  const req = validateRequest('completion', body, randomUUID(), { modelId: backend.model.id, maxTokensCap: Number.MAX_SAFE_INTEGER })
  let tokens = 0
  for await (const ev of backend.run(req, { signal: new AbortController().signal })) {
    if (ev.type === 'usage') tokens = ev.usage.completionTokens
  }
  return { tokens, ms: elapsedMs(start) }
}

/** One streamed generation through the client node, read to the end; tokens from the final usage chunk. */
async function network(clientUrl: string, body: Record<string, unknown>): Promise<Generation> {
  const start = performance.now()
  const res = await fetch(`${clientUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(NETWORK_TIMEOUT_MS),
  })
  const text = await res.text()
  const ms = elapsedMs(start)
  if (res.status !== 200) throw new Error(`inference through the network failed: HTTP ${res.status}: ${text.slice(0, 300)}`)
  const usage = text
    .split('\n\n')
    .filter((e) => e.startsWith('data: {') && e.includes('"usage"'))
    .map((e) => JSON.parse(e.slice(6)) as { usage?: { completion_tokens?: number } })
    .at(-1)?.usage
  if (typeof usage?.completion_tokens !== 'number') throw new Error(`inference through the network: no usage in the answer: ${text.slice(-300)}`)
  return { tokens: usage.completion_tokens, ms }
}
