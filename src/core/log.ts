// Structured logging: one JSON object per line on stderr, with a level filter. Secrets never go in here.
// Outside input reaches logs (a model name, a peer's error text), so the logger itself bounds what it
// writes: every string is truncated, collections are cut short, and each line has a hard size cap.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

/** Longest string kept in a log field (and in the message); the rest is replaced by a count. */
export const MAX_LOG_FIELD_CHARS = 512
/** Hard cap on one log line, bytes (newline included). A line over it keeps only its level, message and base fields. */
export const MAX_LOG_LINE_BYTES = 8 * 1024
/** Items kept from an array or object in a field, and how deep nested values are followed. */
export const MAX_LOG_ITEMS = 32
export const MAX_LOG_DEPTH = 4

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  child(fields: Record<string, unknown>): Logger
}

/** A string cut to `max` characters, saying how much was cut. */
export function truncateForLog(s: string, max = MAX_LOG_FIELD_CHARS): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(+${s.length - max} chars)`
}

/** A bounded, JSON-safe copy of a value for a log field. */
function bounded(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return truncateForLog(v)
  if (typeof v === 'bigint') return v.toString()
  if (v === null || typeof v !== 'object') return typeof v === 'function' || typeof v === 'symbol' ? String(v) : v
  if (v instanceof Error) return { name: truncateForLog(v.name, 64), message: truncateForLog(v.message) }
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `<${v.byteLength} bytes>`
  if (depth >= MAX_LOG_DEPTH) return Array.isArray(v) ? `<array of ${v.length}>` : '<object>'
  if (Array.isArray(v)) {
    const out = v.slice(0, MAX_LOG_ITEMS).map((x) => bounded(x, depth + 1))
    if (v.length > MAX_LOG_ITEMS) out.push(`…(+${v.length - MAX_LOG_ITEMS} items)`)
    return out
  }
  const out: Record<string, unknown> = {}
  let n = 0
  for (const [k, x] of Object.entries(v)) {
    if (n++ >= MAX_LOG_ITEMS) {
      out['…'] = 'more keys left out'
      break
    }
    out[truncateForLog(k, 64)] = bounded(x, depth + 1)
  }
  return out
}

/** The JSON line for one record, never longer than MAX_LOG_LINE_BYTES. */
export function formatLogLine(lvl: LogLevel, msg: string, base: Record<string, unknown>, fields?: Record<string, unknown>, now = new Date()): string {
  const head: Record<string, unknown> = { t: now.toISOString(), level: lvl }
  for (const [k, v] of Object.entries(base)) head[truncateForLog(k, 64)] = bounded(v)
  head.msg = truncateForLog(msg)
  const rec: Record<string, unknown> = { ...head }
  if (fields) for (const [k, v] of Object.entries(fields)) rec[truncateForLog(k, 64)] = bounded(v)
  let line = JSON.stringify(rec) + '\n'
  if (Buffer.byteLength(line) <= MAX_LOG_LINE_BYTES) return line
  // Many fields, each within its own cap, can still add up: keep the record's identity and say what was cut.
  line = JSON.stringify({ ...head, truncated: true, fieldsLeftOut: fields ? Object.keys(fields).slice(0, MAX_LOG_ITEMS).map((k) => truncateForLog(k, 64)) : [] }) + '\n'
  if (Buffer.byteLength(line) <= MAX_LOG_LINE_BYTES) return line
  return JSON.stringify({ t: head.t, level: lvl, msg: truncateForLog(msg, 256), truncated: true }) + '\n'
}

/** A logger writing JSON lines. Level from `level`, else COCOON_LOG_LEVEL, else info. */
export function createLogger(base: Record<string, unknown> = {}, level?: LogLevel, out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = LEVELS[level ?? (process.env.COCOON_LOG_LEVEL as LogLevel) ?? 'info'] ?? LEVELS.info
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[lvl] < min) return
    out(formatLogLine(lvl, msg, base, fields))
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, level, out),
  }
}

/** A logger that drops everything, for tests that do not read logs. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger
  },
}
