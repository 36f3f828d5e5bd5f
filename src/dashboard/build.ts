// Builds the web dashboard (src/dashboard/app) into dist/dashboard with esbuild: ES modules, no CDN, TON Connect split into its own chunk.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

// From the project root, so the compiled copy of this module (build/dashboard/) finds the app's sources too.
const APP = fileURLToPath(new URL('../../src/dashboard/app/', import.meta.url))
export const DASHBOARD_OUT = fileURLToPath(new URL('../../dist/dashboard/', import.meta.url))

/** Bundles the app; about a second. Everything the page loads comes from the node itself. */
export async function buildDashboard(out: string = DASHBOARD_OUT): Promise<void> {
  // esbuild comes with tsx (a dependency), so building needs nothing else installed.
  const esbuild = await import('esbuild')
  fs.rmSync(out, { recursive: true, force: true })
  fs.mkdirSync(out, { recursive: true })
  await esbuild.build({
    entryPoints: { app: path.join(APP, 'main.ts') },
    bundle: true,
    splitting: true,
    format: 'esm',
    target: 'es2020',
    minify: true,
    outdir: out,
    chunkNames: 'chunk-[hash]',
    legalComments: 'none',
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  })
  fs.copyFileSync(path.join(APP, 'index.html'), path.join(out, 'index.html'))
  fs.copyFileSync(path.join(APP, 'style.css'), path.join(out, 'style.css'))
  fs.copyFileSync(path.join(APP, 'icon.svg'), path.join(out, 'icon.svg'))
}

/** Builds once if the output is missing (a checkout that skipped npm install's prepare step). */
export async function buildDashboardIfMissing(out: string = DASHBOARD_OUT): Promise<void> {
  if (!fs.existsSync(path.join(out, 'app.js'))) await buildDashboard(out)
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const t = Date.now()
  await buildDashboard()
  process.stdout.write(`dashboard built in ${Date.now() - t} ms: ${DASHBOARD_OUT}\n`)
}
