/// <reference lib="dom" />
// Small browser helpers: DOM building without innerHTML, number formats with units, the node's JSON, the admin token, a chart.

/** A page renders into `main`; `signal` aborts when the user leaves it (timers stop). */
export type Page = (main: HTMLElement, signal: AbortSignal) => Promise<void>

export type Child = Node | string | number | null | undefined | false
type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>

/** Builds an element; text is always text (never parsed as HTML), so data from the network cannot inject markup. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Array<Child | Child[]>): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener)
    else if (k === 'class') el.className = String(v)
    else if (v === true) el.setAttribute(k, '')
    else el.setAttribute(k, String(v))
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'number' ? String(c) : c)
  return el
}

const ONE_TON = 1_000_000_000n

function big(v: string | number | bigint | null | undefined): bigint | null {
  if (v === null || v === undefined || v === '') return null
  try {
    return BigInt(typeof v === 'number' ? Math.trunc(v) : v)
  } catch {
    return null
  }
}

function group(int: string): string {
  return int.replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f')
}

/** nanoTON as TON: exact, at most 9 decimals, trailing zeros dropped, with the unit. */
export function ton(nano: string | number | bigint | null | undefined, opts: { unit?: boolean; maxDecimals?: number } = {}): string {
  const n = big(nano)
  if (n === null) return '—'
  const neg = n < 0n
  const a = neg ? -n : n
  let frac = (a % ONE_TON).toString().padStart(9, '0')
  if (opts.maxDecimals !== undefined && opts.maxDecimals < 9) frac = frac.slice(0, opts.maxDecimals)
  frac = frac.replace(/0+$/, '')
  return `${neg ? '−' : ''}${group((a / ONE_TON).toString())}${frac ? '.' + frac : ''}${opts.unit === false ? '' : ' TON'}`
}

/** A token count as an integer with the unit. */
export function tokens(v: string | number | bigint | null | undefined, unit = 'tokens'): string {
  const n = big(v)
  return n === null ? '—' : `${group(n.toString())}${unit ? ' ' + unit : ''}`
}

export function int(v: number | string | null | undefined): string {
  const n = big(v as string)
  return n === null ? '—' : group(n.toString())
}

export function pct(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : `${(x * 100).toFixed(1)} %`
}

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  return v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`
}

export function time(t: number | null | undefined): string {
  if (!t) return '—'
  const d = new Date(t < 1e12 ? t * 1000 : t)
  return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

export function short(hex: string | null | undefined, n = 10): string {
  if (!hex) return '—'
  return hex.length > n * 2 ? `${hex.slice(0, n)}…${hex.slice(-4)}` : hex
}

// ---- the admin token -------------------------------------------------------------------------

const TOKEN_KEY = 'cocoon-admin-token'

/** Takes `#token=…` from the URL once (the node printed it), keeps it in this browser, and removes it from the address bar. */
export function adoptTokenFromUrl(): void {
  const m = /(?:^#|&)token=([\w-]+)/.exec(location.hash)
  if (!m) return
  localStorage.setItem(TOKEN_KEY, m[1])
  history.replaceState(null, '', location.pathname + location.search + '#/')
}

export function adminToken(): string | null {
  return localStorage.getItem(TOKEN_KEY)
}

export function setAdminToken(t: string | null): void {
  if (t) localStorage.setItem(TOKEN_KEY, t.trim())
  else localStorage.removeItem(TOKEN_KEY)
}

// ---- the node's endpoints --------------------------------------------------------------------

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

async function parse(r: Response): Promise<any> {
  const text = await r.text()
  let body: any
  try {
    body = text ? JSON.parse(text) : {}
  } catch {
    body = { error: { message: text.slice(0, 200) } }
  }
  if (!r.ok) throw new ApiError(r.status, body?.error?.message ?? `HTTP ${r.status}`)
  return body
}

/** GET a JSON endpoint of this node (the admin token rides along when there is one: nodes beyond loopback ask for it). */
export async function getJson(path: string): Promise<any> {
  const t = adminToken()
  return parse(await fetch(path, { headers: t ? { 'x-cocoon-admin-token': t } : {}, cache: 'no-store' }))
}

/** A money-moving POST: the admin token goes in a header, never in the URL or a cookie (so no other site can forge it). */
export async function postAdmin(path: string, body: unknown = {}): Promise<any> {
  const t = adminToken()
  if (!t) throw new ApiError(401, 'this action needs the admin token: open the URL the node printed, or paste the token (top right)')
  return parse(await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-cocoon-admin-token': t }, body: JSON.stringify(body) }))
}

// ---- bits of UI ------------------------------------------------------------------------------

export function toast(text: string): void {
  const el = document.getElementById('toast')!
  el.textContent = text
  el.classList.add('show')
  setTimeout(() => el.classList.remove('show'), 2600)
}

export async function copy(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text)
    toast('Copied')
  } catch {
    toast('Copy failed: select the text and copy it')
  }
}

export function card(title: Child | Child[], ...body: Array<Child | Child[]>): HTMLElement {
  return h('section', { class: 'card' }, h('h2', {}, title), ...body)
}

export function stat(label: string, value: string, sub?: string, id?: string): HTMLElement {
  return h('div', { class: 'stat', 'data-stat': id }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null)
}

export function table(head: Array<string | [string, 'num']>, rows: Array<Array<Child | Child[]>>, empty = 'Nothing yet.', attrs: Attrs = {}): HTMLElement {
  if (!rows.length) return h('div', { class: 'empty', ...attrs }, empty)
  const isNum = head.map((c) => Array.isArray(c))
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      attrs,
      h('thead', {}, h('tr', {}, head.map((c) => h('th', { class: Array.isArray(c) ? 'num' : undefined }, Array.isArray(c) ? c[0] : c)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => h('td', { class: isNum[i] ? 'num' : undefined }, c))))),
    ),
  )
}

export function badge(text: string, kind: 'good' | 'warn' | 'bad' | 'muted' | '' = ''): HTMLElement {
  return h('span', { class: `badge ${kind}` }, text)
}

/**
 * A long operation: a busy bar, what it waits for, and the seconds so far. `step` changes the
 * text; `done` ends it with a result line.
 */
export function progress(label: string): { el: HTMLElement; step(text: string): void; done(text: string, ok: boolean): void } {
  const text = h('span', {}, label)
  const secs = h('span', { class: 'mono' }, '0 s')
  const bar = h('div', { class: 'progress busy', role: 'progressbar', 'aria-label': label }, h('span', {}))
  const el = h('div', { class: 'status-line', 'data-progress': '' }, bar, h('div', { class: 'row' }, text, h('span', { class: 'spacer' }), secs))
  const start = Date.now()
  const timer = setInterval(() => (secs.textContent = `${Math.round((Date.now() - start) / 1000)} s`), 500)
  return {
    el,
    step: (t) => (text.textContent = t),
    done: (t, ok) => {
      clearInterval(timer)
      bar.classList.remove('busy')
      ;(bar.firstChild as HTMLElement).style.width = '100%'
      if (!ok) bar.classList.add('over')
      text.textContent = t
      el.setAttribute('data-progress', ok ? 'done' : 'failed')
    },
  }
}

/** A usage bar: spent of limit. */
export function meter(used: bigint, limit: bigint | null): HTMLElement {
  if (limit === null || limit === 0n) return h('span', { class: 'muted small' }, 'no limit')
  const f = Number((used * 1000n) / limit) / 1000
  return h('div', { class: `progress ${f >= 1 ? 'over' : ''}`, title: pct(f) }, h('span', { style: `width:${Math.min(100, f * 100)}%` }))
}

/** A small SVG area chart; y values are numbers (callers scale nanoTON to TON first). */
export function chart(points: Array<{ t: number; y: number }>, yLabel: (y: number) => string): HTMLElement {
  const W = 600
  const H = 180
  const P = { l: 8, r: 8, t: 10, b: 22 }
  const wrap = h('div', { class: 'chart' })
  if (points.length < 2) {
    wrap.append(h('div', { class: 'empty' }, 'The chart fills in as this node works.'))
    return wrap
  }
  const t0 = points[0].t
  const t1 = points[points.length - 1].t
  const yMax = Math.max(...points.map((p) => p.y), 0) || 1
  const x = (t: number) => P.l + ((t - t0) / Math.max(1, t1 - t0)) * (W - P.l - P.r)
  const y = (v: number) => H - P.b - (v / yMax) * (H - P.t - P.b)
  const ns = 'http://www.w3.org/2000/svg'
  const svg = document.createElementNS(ns, 'svg')
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`)
  svg.setAttribute('preserveAspectRatio', 'none')
  svg.setAttribute('role', 'img')
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')
  const mk = (tag: string, attrs: Record<string, string>) => {
    const e = document.createElementNS(ns, tag)
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
    svg.append(e)
    return e
  }
  mk('line', { class: 'axis', x1: String(P.l), x2: String(W - P.r), y1: String(H - P.b), y2: String(H - P.b) })
  mk('path', { class: 'area', d: `${line} L${x(t1).toFixed(1)},${H - P.b} L${x(t0).toFixed(1)},${H - P.b} Z` })
  mk('path', { class: 'line', d: line, 'vector-effect': 'non-scaling-stroke' })
  svg.setAttribute('aria-label', `from ${time(t0)} to ${time(t1)}, up to ${yLabel(yMax)}`)
  wrap.append(svg, h('div', { class: 'row small muted' }, h('span', {}, time(t0)), h('span', { class: 'spacer' }), h('span', {}, `max ${yLabel(yMax)}`), h('span', { class: 'spacer' }), h('span', {}, time(t1))))
  return wrap
}

const REFRESH_MS = 4_000
const REFRESH_EVENT = 'cocoon:refresh'

/** Reloads every live box on the page now. */
export function refreshAll(): void {
  window.dispatchEvent(new Event(REFRESH_EVENT))
}

/** Re-renders `box` from `load` now and every few seconds until the page changes. */
export function live(box: HTMLElement, load: () => Promise<Node | Node[]>, signal: AbortSignal, everyMs = REFRESH_MS): void {
  const run = async () => {
    try {
      const n = await load()
      if (signal.aborted) return
      box.replaceChildren(...(Array.isArray(n) ? n : [n]))
      box.removeAttribute('data-error')
    } catch (err) {
      if (signal.aborted) return
      box.setAttribute('data-error', '')
      box.replaceChildren(h('div', { class: 'empty' }, `Could not load: ${(err as Error).message}`))
    }
  }
  void run()
  const t = setInterval(run, everyMs)
  // After an action (top-up, payout), the page asks every live box to reload at once.
  window.addEventListener(REFRESH_EVENT, run)
  signal.addEventListener('abort', () => {
    clearInterval(t)
    window.removeEventListener(REFRESH_EVENT, run)
  })
}

export function stateBadge(s: string | null | undefined): HTMLElement {
  const k = s === 'connected' || s === 'active' ? 'good' : s === 'connecting' || s === 'closing' ? 'warn' : s ? 'bad' : 'muted'
  return badge(s ?? 'unknown', k as 'good')
}

