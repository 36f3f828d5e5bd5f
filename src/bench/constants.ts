// Named defaults of `cocoon bench`: the workload, the durations of each mode, and where results go.
import { createHash } from 'node:crypto'

/** Version of the result JSON (see schema.ts); bumped on any incompatible change. */
export const BENCH_RESULT_VERSION = 1

/** Default result file, relative to the working directory (git-ignored). */
export const DEFAULT_OUT_FILE = 'bench/results/latest.json'
/** Where `cocoon bench --soak` writes its result unless --out says otherwise. */
export const DEFAULT_SOAK_OUT_FILE = 'bench/results/soak.json'
/** Where `cocoon bench --scale` writes its result unless --out says otherwise. */
export const DEFAULT_SCALE_OUT_FILE = 'bench/results/scale.json'

/** Where the contract fee report lives, relative to the working directory (see src/ton/contracts/fees.ts). */
export const DEFAULT_FEE_REPORT_FILE = 'bench/results/contract-fees.json'

/** Concurrent connections of the protocol-overhead load. */
export const OVERHEAD_CONCURRENCY = 30

/** The fake backend's answer: this many SSE content chunks... */
export const FAKE_CHUNK_COUNT = 50
/** ...of this many bytes of text each (the `delta.content` string)... */
export const FAKE_CHUNK_BYTES = 128
/** ...with this pause between chunks (0: as fast as the socket takes them). */
export const FAKE_CHUNK_DELAY_MS = 0
/** Prompt tokens the fake backend reports in its usage. */
export const FAKE_PROMPT_TOKENS = 16

/** The model id the bench's openai-backed worker serves (its upstream is the fake backend). */
export const BENCH_UPSTREAM_MODEL = 'bench-upstream'
/**
 * The model hash that worker declares, allowed on the devnet root by the bench: the fake backend
 * has no weights, so this stands for them (SHA-256 of "cocoon-bench-fake-backend").
 */
export const BENCH_UPSTREAM_MODEL_HASH = createHash('sha256').update('cocoon-bench-fake-backend').digest('hex')
/** Slots of that worker: above the load's concurrency, so the proxy never answers "busy". */
export const BENCH_WORKER_MAX_ACTIVE_REQUESTS = 64

/** Prompt of the inference benchmark (greedy, so both sides generate the same tokens). */
export const INFERENCE_PROMPT = 'Once upon a time'
/** Streams at once in the concurrent inference run. */
export const INFERENCE_CONCURRENCY = 4

/** Time allowed for the devnet and the extra worker to come up. */
export const NETWORK_READY_TIMEOUT_MS = 120_000
/** Time allowed for a child to exit after SIGTERM before it is killed. */
export const CHILD_STOP_GRACE_MS = 8_000

/** How long and how often each part runs. */
export interface BenchPlan {
  /** Direct/network pairs per measure; medians are reported. */
  rounds: number
  /** Unrecorded load before each target's first measured run (0: none). */
  warmupSec: number
  /** Length of one run at concurrency 30. */
  loadSec: number
  /** Length of one run at concurrency 1. */
  c1Sec: number
  /** Length of the simulated-evidence handshake loop. */
  handshakeSec: number
  /** Handshakes with cold TDX verification (each one a full DCAP check on both ends). */
  tdxColdHandshakes: number
  /** Handshakes with the TDX verdict cached. */
  tdxCachedHandshakes: number
  /** max_tokens of each inference request. */
  inferenceMaxTokens: number
  /** Streams one after another in each single-stream measurement. */
  inferenceSequential: number
  /**
   * Quiet time after the network starts before its idle memory is read: V8 collects a quiet heap (its memory
   * reducer) some seconds after the allocations stop, so a read right after start-up counts start-up garbage.
   */
  idleSettleSec: number
}

export type BenchMode = 'full' | 'quick' | 'smoke'

/**
 * full: under 10 minutes on 2 cores; quick: under 2; smoke: seconds, for the test suite only
 * (its figures are too short to mean much).
 */
export const BENCH_PLANS: Readonly<Record<BenchMode, BenchPlan>> = {
  full: { rounds: 5, warmupSec: 3, loadSec: 12, c1Sec: 6, handshakeSec: 8, tdxColdHandshakes: 30, tdxCachedHandshakes: 300, inferenceMaxTokens: 256, inferenceSequential: 3, idleSettleSec: 20 },
  quick: { rounds: 1, warmupSec: 2, loadSec: 8, c1Sec: 5, handshakeSec: 3, tdxColdHandshakes: 10, tdxCachedHandshakes: 100, inferenceMaxTokens: 128, inferenceSequential: 2, idleSettleSec: 20 },
  // Windows of 3 s at concurrency 30: on a 2-core machine shared with other tests, the first answers of a cold
  // 30-stream wave through the network could all still be in flight when a 1 s window closed (seen in CI).
  smoke: { rounds: 1, warmupSec: 0, loadSec: 3, c1Sec: 1, handshakeSec: 0.5, tdxColdHandshakes: 2, tdxCachedHandshakes: 5, inferenceMaxTokens: 16, inferenceSequential: 1, idleSettleSec: 1 },
}
