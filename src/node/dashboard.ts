// Serves the web dashboard's static files (built at install into dist/dashboard) at `/` on every node.
import fs from 'node:fs'
import path from 'node:path'
import type http from 'node:http'
import { fileURLToPath } from 'node:url'

/** Where `npm run build:dashboard` writes the app. */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../dist/dashboard/', import.meta.url))

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
}

/**
 * The page may load only its own scripts (no CDN, no inline script). TON Connect talks to wallet
 * bridges over https and shows wallet icons, so connect-src and img-src allow https. Framing is
 * allowed for Telegram's web client (Mini App), nobody else.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: https:",
  "connect-src 'self' https:",
  "frame-ancestors 'self' https://web.telegram.org",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ')

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Cocoon</title><p>The dashboard is not built. Run <code>npm run build:dashboard</code> (npm install does it).</p>`

/** Serves GET / and GET /ui/<file>; returns whether it handled the request. */
export function serveDashboard(req: http.IncomingMessage, res: http.ServerResponse, dir: string = DASHBOARD_DIR): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const p = (req.url ?? '/').split('?')[0]
  if (p === '/tonconnect-manifest.json') {
    // TON Connect wallets fetch this to name the app asking for a payment; it describes this node's own origin.
    const origin = `http://${String(req.headers.host ?? 'localhost').replace(/[^\w.:\[\]-]/g, '')}`
    const text = JSON.stringify({ url: origin, name: 'Cocoon client node', iconUrl: `${origin}/ui/icon.svg` })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'access-control-allow-origin': '*' })
    res.end(text)
    return true
  }
  let file: string
  if (p === '/' || p === '/index.html') file = 'index.html'
  else if (p.startsWith('/ui/') && /^[\w.-]+$/.test(p.slice(4)) && !p.includes('..')) file = p.slice(4)
  else return false
  const full = path.join(dir, file)
  let body: Buffer
  try {
    body = fs.readFileSync(full)
  } catch {
    if (file !== 'index.html') return false
    body = Buffer.from(NOT_BUILT)
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'content-length': body.length,
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': file === 'index.html' ? 'no-store' : 'public, max-age=300',
  })
  res.end(req.method === 'HEAD' ? undefined : body)
  return true
}
