#!/usr/bin/env node
// The one `cocoon` binary. It runs the compiled JavaScript in build/ (built from src/ by `npm install` through
// the `prepare` script, or by `npm run build`) when that build is complete and newer than every file under
// src/; otherwise (no build, a failed one, or sources edited since) it loads the TypeScript sources through
// tsx, so a checkout being edited never runs stale code. COCOON_FROM_SOURCE=1 forces the sources.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Time the usable build in build/ started, or undefined when there is none. */
function buildTime() {
  try {
    return fs.statSync(path.join(ROOT, 'build', 'BUILD_STAMP')).mtimeMs
  } catch {
    return undefined
  }
}

/** True when some file under `dir` (or the folder itself: a deleted file) changed at or after `since`. */
function changedSince(dir, since) {
  const st = fs.statSync(dir)
  if (st.mtimeMs >= since) return true
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory() ? changedSince(p, since) : fs.statSync(p).mtimeMs >= since) return true
  }
  return false
}

// COCOON_CPU_PROF=DIR: a CPU profile of this process in DIR/<command>-<pid>.cpuprofile when it exits (NODE_OPTIONS
// may not carry --cpu-prof, and this also reaches the nodes a devnet or the bench starts).
if (process.env.COCOON_CPU_PROF) {
  const { Session } = await import('node:inspector')
  const session = new Session()
  session.connect()
  session.post('Profiler.enable')
  session.post('Profiler.start')
  process.on('exit', () => {
    // An in-thread inspector session answers synchronously, so this runs to the end inside the exit handler.
    session.post('Profiler.stop', (err, r) => {
      if (err) return
      fs.mkdirSync(process.env.COCOON_CPU_PROF, { recursive: true })
      fs.writeFileSync(path.join(process.env.COCOON_CPU_PROF, `${process.argv[2] ?? 'cocoon'}-${process.pid}.cpuprofile`), JSON.stringify(r.profile))
    })
  })
}

const built = process.env.COCOON_FROM_SOURCE === '1' ? undefined : buildTime()
let entry
if (built !== undefined && !changedSince(path.join(ROOT, 'src'), built)) {
  entry = pathToFileURL(path.join(ROOT, 'build', 'cli', 'main.js')).href
} else {
  const { register } = await import('tsx/esm/api')
  register()
  entry = pathToFileURL(path.join(ROOT, 'src', 'cli', 'main.ts')).href
}
const { main } = await import(entry)
await main(process.argv.slice(2))
