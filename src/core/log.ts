// Structured logging: one JSON object per line on stderr, with a level filter. Secrets never go in here.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
  child(fields: Record<string, unknown>): Logger
}

function serializable(v: unknown): unknown {
  if (v instanceof Error) return { name: v.name, message: v.message }
  if (typeof v === 'bigint') return v.toString()
  return v
}

/** A logger writing JSON lines. Level from `level`, else COCOON_LOG_LEVEL, else info. */
export function createLogger(base: Record<string, unknown> = {}, level?: LogLevel, out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = LEVELS[level ?? (process.env.COCOON_LOG_LEVEL as LogLevel) ?? 'info'] ?? LEVELS.info
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[lvl] < min) return
    const rec: Record<string, unknown> = { t: new Date().toISOString(), level: lvl, ...base, msg }
    if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = serializable(v)
    out(JSON.stringify(rec) + '\n')
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
