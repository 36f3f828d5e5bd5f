// Builds build/ from src/ with tsc (`npm run build`, and `prepare` at `npm install`). bin/cocoon.js runs build/
// only when build/BUILD_STAMP is newer than every file under src/ (see bin/cocoon.js), so the stamp is written
// last, holding the time the build started: a source edited while tsc runs leaves the build stale.
// A failed build never fails `npm install`: bin/cocoon.js then runs the sources through tsx.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const OUT = path.join(ROOT, 'build')
const STAMP = path.join(OUT, 'BUILD_STAMP')
const started = Date.now()

fs.rmSync(STAMP, { force: true })
let tsc
try {
  tsc = fileURLToPath(import.meta.resolve('typescript/bin/tsc'))
} catch {
  console.warn('cocoon build: typescript is not installed; bin/cocoon.js will run the sources through tsx')
  process.exit(0)
}
const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' })
if (r.status !== 0) {
  console.warn('cocoon build: tsc failed; bin/cocoon.js will run the sources through tsx')
  process.exit(process.argv.includes('--strict') ? 1 : 0)
}
fs.writeFileSync(STAMP, `${started}\n`)
fs.utimesSync(STAMP, started / 1000, started / 1000)
console.log(`cocoon build: build/ from src/ in ${((Date.now() - started) / 1000).toFixed(1)} s`)
