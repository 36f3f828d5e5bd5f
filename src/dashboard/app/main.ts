/// <reference lib="dom" />
// The dashboard's entry: finds which role this node has, then shows that role's pages (hash routes, no server routing).
import { adminToken, adoptTokenFromUrl, getJson, h, setAdminToken, toast, type Page } from './util.ts'
import { keys, overview, playground, requests } from './client.ts'
import { workerHome } from './worker.ts'
import { proxyHome } from './proxy.ts'


const ROUTES: Record<string, Array<{ path: string; title: string; page: Page }>> = {
  client: [
    { path: '/', title: 'Overview', page: overview },
    { path: '/playground', title: 'Playground', page: playground },
    { path: '/requests', title: 'Requests', page: requests },
    { path: '/keys', title: 'API keys', page: keys },
  ],
  worker: [{ path: '/', title: 'Earnings', page: workerHome }],
  proxy: [{ path: '/', title: 'Overview', page: proxyHome }],
}

let current: AbortController | undefined

function tokenButton(): void {
  const b = document.getElementById('token-button') as HTMLButtonElement
  const has = !!adminToken()
  b.textContent = has ? 'Admin token ✓' : 'Admin token'
  b.title = has ? 'Money-moving actions send it in a header. Click to forget it.' : 'Paste the token from the node’s data folder (admin.token)'
  b.onclick = () => {
    if (adminToken()) {
      if (confirm('Forget the admin token in this browser?')) setAdminToken(null)
    } else {
      const t = prompt('Admin token (from the URL the node printed, or the admin.token file in its data folder):')
      if (t) setAdminToken(t)
    }
    tokenButton()
  }
}

async function render(role: string): Promise<void> {
  current?.abort()
  current = new AbortController()
  const routes = ROUTES[role] ?? []
  const path = location.hash.replace(/^#/, '') || '/'
  const route = routes.find((r) => r.path === path) ?? routes[0]
  const tabs = document.getElementById('tabs')!
  tabs.replaceChildren(...routes.map((r) => h('a', { href: `#${r.path}`, class: r === route ? 'active' : '', 'aria-current': r === route ? 'page' : undefined }, r.title)))
  tabs.hidden = routes.length < 2
  const main = document.getElementById('main')!
  main.replaceChildren()
  document.title = `${route ? route.title + ' · ' : ''}Cocoon ${role}`
  if (!route) return void main.append(h('p', {}, `Unknown node role '${role}'.`))
  try {
    await route.page(main, current.signal)
  } catch (err) {
    main.append(h('section', { class: 'card' }, h('p', { class: 'msg error' }, `Could not load this page: ${(err as Error).message}`)))
  }
}

async function start(): Promise<void> {
  adoptTokenFromUrl()
  tokenButton()
  let stats: any
  try {
    stats = await getJson('/jsonstats')
  } catch (err) {
    document.getElementById('main')!.replaceChildren(h('p', {}, `This node did not answer: ${(err as Error).message}`))
    return
  }
  const role = String(stats.role)
  document.getElementById('role')!.textContent = role
  document.body.dataset.role = role
  getJson('/api/node')
    .then((n) => (document.getElementById('network')!.textContent = n.network ?? 'off-chain'))
    .catch(() => {})
  window.addEventListener('hashchange', () => {
    // A pasted URL with #token=… on an open dashboard: take the token, then show the home page.
    if (location.hash.includes('token=')) {
      adoptTokenFromUrl()
      tokenButton()
    }
    void render(role)
  })
  await render(role)
  document.body.dataset.ready = 'true'
}

start().catch((err) => toast(String(err)))
