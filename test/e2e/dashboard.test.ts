// The web dashboard in a real browser (Debian's Chromium, headless, through playwright-core) against a real devnet:
// the network table, the playground, a faucet top-up, worker earnings, a payout with and without the admin token,
// API keys used through the official openai SDK until 429 and after revocation, and screenshots of every page.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import OpenAI from 'openai'
import { chromium, type Browser, type Page } from 'playwright-core'
import { cocoon, randomPortOffset, ROOT, tmpDir, type Proc } from '../helpers/procs.ts'
import { waitFor } from '../helpers/network.ts'
import type { DevnetState } from '../../src/node/devnet.ts'
import { buildDashboard } from '../../src/dashboard/build.ts'

const CHROMIUM = process.env.COCOON_CHROMIUM ?? '/usr/bin/chromium'
/** Screenshots land here (git-ignored), kept as test artifacts. */
export const ARTIFACTS = path.join(ROOT, 'test-artifacts', 'dashboard')

let devnet: Proc
let dir: string
let state: DevnetState
let browser: Browser
let page: Page
let client: string
let dashboardWithToken: string
let openai: OpenAI
const token = (node: string) => fs.readFileSync(path.join(dir, node, 'admin.token'), 'utf8').trim()

before(async () => {
  await buildDashboard()
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  dir = tmpDir('dashboard')
  devnet = cocoon(['devnet', '--workers', '1', '--no-speech', '--dir', dir, '--port-offset', String(randomPortOffset())])
  const m = await devnet.waitForOutput(/OpenAI base URL:\s+(\S+)\n\s+dashboard:\s+(\S+)/, 180_000)
  state = JSON.parse(fs.readFileSync(path.join(dir, 'devnet.json'), 'utf8'))
  client = `http://127.0.0.1:${state.ports.client}`
  dashboardWithToken = m[2]
  openai = new OpenAI({ baseURL: m[1], apiKey: 'unused', maxRetries: 0 })
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on('pageerror', (e) => assert.fail(`page error: ${e.message}`))
})

after(async () => {
  await browser?.close()
  if (devnet && devnet.proc.exitCode === null) {
    devnet.proc.kill('SIGINT')
    await devnet.exited
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

/** Full-page screenshots at desktop and phone (Mini App) widths. */
async function shoot(name: string): Promise<void> {
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: width === 375 ? 812 : 900 })
    await page.waitForTimeout(300)
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}-${width}.png`), fullPage: true })
  }
  // A smaller, viewport-only picture for docs/dashboard.md (copied to docs/img by hand).
  await page.setViewportSize({ width: 1024, height: 720 })
  await page.waitForTimeout(300)
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}-doc.png`) })
  await page.setViewportSize({ width: 1280, height: 900 })
}

async function open(url: string): Promise<void> {
  const same = page.url().split('#')[0] === url.split('#')[0]
  await page.goto(url)
  // Same page, another #route: the app routes without reloading; reload so each step starts fresh.
  if (same && !url.includes('#token=')) await page.reload()
  await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 })
}

const ask = (o: OpenAI) => o.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 8, temperature: 0 })
const money = async () => (await (await fetch(`${client}/api/money`)).json()) as { proxies: Array<{ balanceNano: string }> }

test('npm start prints the dashboard URL, with the admin token, next to the OpenAI URL', () => {
  assert.match(devnet.output(), /OpenAI base URL:\s+http:\/\/127\.0\.0\.1:\d+\/v1\n\s+dashboard:\s+http:\/\/127\.0\.0\.1:\d+\/#token=[\w-]{20,}/)
  assert.equal(dashboardWithToken, `${client}/#token=${token('client')}`)
  assert.equal(fs.statSync(path.join(dir, 'client', 'admin.token')).mode & 0o777, 0o600)
  // The children keep the token out of their logs.
  for (const f of fs.readdirSync(path.join(dir, 'logs'))) assert.ok(!fs.readFileSync(path.join(dir, 'logs', f), 'utf8').includes(token('client')), f)
})

test('the client dashboard lists the devnet’s proxy and model, without a token on loopback', async () => {
  await open(`${client}/`)
  await page.waitForSelector('[data-table="models"]')
  const models = await page.textContent('[data-table="models"]')
  assert.match(models!, /stories260K/)
  const proxies = await page.textContent('[data-table="proxies"]')
  const stats = await (await fetch(`${client}/jsonstats`)).json()
  const proxyId = stats.proxies[0].proxyId as string
  assert.ok(proxies!.includes(proxyId.slice(0, 8)), `proxy ${proxyId.slice(0, 8)} in ${proxies}`)
  assert.match(proxies!, /connected/i)
  await page.waitForSelector('[data-stat="balance"]')
  await shoot('client-overview')
  // The theme follows the system: the same page in dark mode.
  await page.emulateMedia({ colorScheme: 'dark' })
  assert.notEqual(await page.evaluate(() => getComputedStyle(document.body).backgroundColor), 'rgb(246, 247, 249)')
  await page.screenshot({ path: path.join(ARTIFACTS, 'client-overview-dark-1280.png'), fullPage: true })
  await page.emulateMedia({ colorScheme: 'light' })
})

test('the playground streams an answer with its cost, and the request appears in the recent list', async () => {
  await open(`${client}/#/playground`)
  await page.fill('textarea[name="prompt"]', 'Once upon a time')
  await page.fill('input[name="max_tokens"]', '24')
  await page.click('[data-action="send"]')
  // The text grows while the answer streams (first token before the last), then the meta line shows the cost.
  await page.waitForFunction(() => (document.querySelector('[data-answer]')?.textContent ?? '').length > 0, undefined, { timeout: 30_000 })
  await page.waitForSelector('.msg.assistant .meta[data-cost]', { timeout: 30_000 })
  const meta = await page.textContent('.msg.assistant .meta')
  assert.match(meta!, /completion tokens · cost 0\.\d+ TON/)
  const cost = Number(await page.getAttribute('.msg.assistant .meta', 'data-cost'))
  assert.ok(cost > 0)
  const curl = await page.textContent('[data-code="curl"]')
  assert.match(curl!, /curl http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/)
  assert.match((await page.textContent('[data-code="sdk"]'))!, /new OpenAI\(\{ baseURL: 'http:\/\/127\.0\.0\.1:\d+\/v1'/)
  await shoot('client-playground')

  await open(`${client}/#/requests`)
  await page.waitForSelector('[data-table="requests"]')
  const rows = await page.$$eval('[data-table="requests"] tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''))
  assert.ok(rows.some((r) => r.includes('stories260K') && r.includes('succeeded')), rows.join('\n'))
  const recent = (await (await fetch(`${client}/api/requests?limit=1`)).json()).requests[0]
  assert.equal(Number(recent.costNano), cost)
  assert.equal(recent.stream, true)
  // The answer's receipt: its state, and Verify runs the checks of `cocoon receipt verify`, each shown.
  assert.match(recent.receipt ?? '', /^(held|committed|verified)$/, JSON.stringify(recent))
  await page.click('[data-table="requests"] tbody tr:first-child [data-action="verify"]')
  await page.waitForSelector('[data-table="checks"]', { timeout: 30_000 })
  const checks = await page.$$eval('[data-table="checks"] tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''))
  assert.ok(checks.some((c) => /^signature\s*ok/.test(c)), checks.join('\n'))
  assert.ok(checks.some((c) => /^certificate/.test(c)) && checks.some((c) => /^proof/.test(c)), checks.join('\n'))
  await shoot('client-requests')
})

test('a top-up from the devnet faucet makes the balance grow, with progress while the chain confirms', async () => {
  await open(dashboardWithToken)
  assert.equal(await page.evaluate(() => location.hash), '#/', 'the token leaves the address bar')
  const before = BigInt((await money()).proxies[0].balanceNano)
  await page.fill('input[name="amount"]', '2')
  await page.click('[data-action="topup"]')
  await page.waitForSelector('[data-progress=""]')
  await page.waitForSelector('[data-progress="done"]', { timeout: 60_000 })
  const after = BigInt((await money()).proxies[0].balanceNano)
  assert.ok(after >= before + 2_000_000_000n - 1_000_000n, `${before} -> ${after}`)
  await page.waitForFunction((want) => (document.querySelector('[data-stat="balance"] .value')?.textContent ?? '').replace(/\s/g, '') !== want, (Number(before) / 1e9).toString() + 'TON', { timeout: 10_000 })
})

test('the worker dashboard shows earnings growing after requests', async () => {
  const worker = `http://127.0.0.1:${state.ports.workers[0]}`
  await open(`${worker}/`)
  await page.waitForSelector('[data-stat="earned"]')
  const earned = async () => (await page.textContent('[data-stat="earned"] .sub'))!
  const before = await earned()
  for (let i = 0; i < 3; i++) await ask(openai)
  await page.waitForFunction((b) => document.querySelector('[data-stat="earned"] .sub')?.textContent !== b, before, { timeout: 20_000 })
  assert.notEqual(await earned(), before)
  await shoot('worker')
})

test('claiming a payout needs the admin token: refused without it, done with it', async () => {
  const worker = `http://127.0.0.1:${state.ports.workers[0]}`
  // Straight at the endpoint: no token, a wrong one, one in the query string — all 401.
  for (const [url, headers] of [
    [`${worker}/admin/payout`, {}],
    [`${worker}/admin/payout`, { 'x-cocoon-admin-token': 'wrong-token-wrong-token' }],
    [`${worker}/admin/payout?token=${token('worker-0')}`, {}],
  ] as const) {
    const r = await fetch(url, { method: 'POST', headers })
    assert.equal(r.status, 401, url)
  }
  // In the browser with a wrong token stored: the node refuses.
  await open(`${worker}/`)
  await page.evaluate(() => localStorage.setItem('cocoon-admin-token', 'wrong-token-wrong-token'))
  await page.click('[data-action="payout"]')
  await page.waitForSelector('[data-progress="failed"]', { timeout: 20_000 })
  assert.match((await page.textContent('[data-progress="failed"]'))!, /admin token/)
  // With the node's token (the URL the operator was given): it waits for the transactions, then reports.
  await open(`${worker}/#token=${token('worker-0')}`)
  await page.click('[data-action="payout"]')
  await page.waitForSelector('[data-progress="done"]', { timeout: 90_000 })
  assert.match((await page.textContent('[data-progress="done"]'))!, /settled/)
  await shoot('worker-payout')
})

test('forced settlement on the proxy: 401 without the token; 10 calls run one round, then 429', async () => {
  const proxy = `http://127.0.0.1:${state.ports.proxyStats}`
  assert.equal((await fetch(`${proxy}/admin/settle`, { method: 'POST' })).status, 401)
  const headers = { 'x-cocoon-admin-token': token('proxy') }
  // Earlier payouts may have forced a round; wait out the interval first.
  for (;;) {
    const r = await fetch(`${proxy}/admin/settle`, { method: 'POST', headers })
    if (r.status !== 429) break
    await new Promise((res) => setTimeout(res, Number(r.headers.get('retry-after')) * 1000))
  }
  await new Promise((res) => setTimeout(res, 10_500))
  const rs = await Promise.all(Array.from({ length: 10 }, () => fetch(`${proxy}/admin/settle`, { method: 'POST', headers })))
  const bodies = await Promise.all(rs.map((r) => r.text()))
  assert.deepEqual(rs.map((r) => r.status), Array(10).fill(200), bodies.join('\n'))
  assert.equal(new Set(bodies).size, 1, 'all ten share one settlement round')
  const again = await fetch(`${proxy}/admin/settle`, { method: 'POST', headers })
  assert.equal(again.status, 429)
  assert.ok(Number(again.headers.get('retry-after')) >= 1)
  await open(`${proxy}/`)
  await page.waitForSelector('[data-table="workers"]')
  assert.match((await page.textContent('[data-table="workers"]'))!, /stories260K/)
  await page.waitForSelector('[data-stat="serving"]')
  await shoot('proxy')
})

test('an API key with a small limit works through the openai SDK until 429, then revoked gets 401', async () => {
  await open(`${client}/#token=${token('client')}`)
  await open(`${client}/#/keys`)
  const cost = Number((await (await fetch(`${client}/api/requests?limit=1`)).json()).requests[0].costNano)
  await page.fill('input[name="name"]', 'e2e-bot')
  // About two and a half answers of 8 tokens.
  await page.fill('input[name="limit"]', ((cost * 2.5) / 1e9).toFixed(9))
  await page.selectOption('select[name="period"]', 'day')
  await page.click('[data-action="create-key"]')
  await page.waitForSelector('[data-secret]')
  const key = (await page.textContent('[data-secret]'))!.trim()
  assert.match(key, /^sk-cocoon-[\w-]{40,}$/)
  const sdk = new OpenAI({ baseURL: `${client}/v1`, apiKey: key, maxRetries: 0 })
  let ok = 0
  let refused: any
  for (let i = 0; i < 20 && !refused; i++) {
    try {
      await ask(sdk)
      ok++
    } catch (e) {
      refused = e
    }
  }
  assert.ok(ok >= 1, `${ok} answers before the limit`)
  assert.ok(refused instanceof OpenAI.RateLimitError, String(refused))
  assert.equal(refused.code, 'insufficient_quota')
  assert.match(refused.message, /'e2e-bot' reached its spend limit of 0\.\d+ TON per day/)
  await open(`${client}/#/keys`)
  await page.waitForSelector('[data-table="keys"]')
  assert.match((await page.textContent('[data-table="keys"]'))!, /e2e-bot/)
  await shoot('client-keys')
  page.once('dialog', (d) => void d.accept())
  await page.click('[data-table="keys"] [data-action="revoke"]')
  await waitFor(async () => /revoked/i.test((await page.textContent('[data-table="keys"]')) ?? ''), 'the key shows as revoked')
  await assert.rejects(ask(sdk), (e: any) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key')
})
