// Per-request timestamps of the E2EE path, for finding where its time goes (docs/benchmarks.md,
// "E2EE on vs off"). Off unless COCOON_E2EE_TRACE names a folder: then each process appends
// `{"id":requestId,"ev":event,"at":epochMs}` lines to <folder>/<pid>.jsonl (kept in memory, written
// once a second and at exit). `at` is epoch time in fractional milliseconds from the monotonic
// clock, comparable across the processes of one machine. Nothing of a request but its id is traced.
import fs from 'node:fs'
import path from 'node:path'

const TRACE_FLUSH_INTERVAL_MS = 1_000
const TRACE_ID_CHARS = 128

/** Records that request `id` reached `ev` now (or at `atMs`, from traceNow()); undefined (so a call costs nothing) when tracing is off. */
export const e2eeTrace: ((id: string, ev: string, atMs?: number) => void) | undefined = makeTrace(process.env.COCOON_E2EE_TRACE)


/** Now, as `at` is written: epoch milliseconds from the monotonic clock. */
export function traceNow(): number {
  return performance.timeOrigin + performance.now()
}

function makeTrace(dir: string | undefined): ((id: string, ev: string, atMs?: number) => void) | undefined {
  if (!dir) return undefined
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${process.pid}.jsonl`)
  let lines: string[] = []
  const flush = () => {
    if (lines.length === 0) return
    fs.appendFileSync(file, lines.join(''))
    lines = []
  }
  setInterval(flush, TRACE_FLUSH_INTERVAL_MS).unref()
  process.on('exit', flush)
  return (id, ev, atMs) => {
    lines.push(JSON.stringify({ id: id.slice(0, TRACE_ID_CHARS), ev, at: atMs ?? traceNow() }) + '\n')
  }
}
