/// <reference lib="dom" />
// The client node's pages: the network, my money and top-ups, the playground, recent requests, API keys.
import { type Child, refreshAll, live, stateBadge, adminToken, badge, card, chart, copy, getJson, h, int, meter, ms, postAdmin, progress, short, stat, table, time, toast, ton, tokens } from './util.ts'
import type { Page } from './util.ts'

async function networkCard(): Promise<Node[]> {
  const [net, models] = await Promise.all([getJson('/api/network'), getJson('/v1/models').catch(() => ({ data: [] }))])
  const p = net.params
  const per1M = p ? ton(BigInt(p.pricePerTokenNano) * 1_000_000n) : '—'
  const mult = (m: number) => `${(m / 10000).toFixed(2)}×`
  return [
    h(
      'div',
      { class: 'stats' },
      stat('Network', net.network ?? 'off-chain', net.chain ? `root ${short(net.chain.root, 8)}` : 'no payments'),
      stat('Price', p ? `${int(p.pricePerTokenNano)} nanoTON` : '—', p ? `per token · ${per1M} per 1M tokens` : undefined),
      stat('Multipliers', p ? `${mult(p.promptMult)} / ${mult(p.completionMult)}` : '—', p ? `prompt / completion · cached ${mult(p.cachedMult)}` : undefined),
      stat('Proxies', String(net.proxies.length), `${net.proxies.filter((x: any) => x.state === 'connected').length} connected`),
    ),
    h('h3', { class: 'small muted' }, 'Proxies (from the root contract)'),
    table(
      ['Proxy', 'Endpoint', 'State', ['Requests', 'num'], ['Failovers', 'num'], ['In flight', 'num']],
      net.proxies.map((x: any) => [h('span', { class: 'hash', title: x.id }, short(x.id, 8)), `${x.host}${x.clientPort ? ':' + x.clientPort : ''}`, stateBadge(x.state), int(x.requests), int(x.failovers), int(x.activeRequests)]),
      'No proxy registered.',
      { 'data-table': 'proxies' },
    ),
    h('h3', { class: 'small muted' }, 'Models'),
    table(
      ['Model', ['Workers', 'num'], 'Coefficients', ['Running', 'num']],
      (models.data ?? []).map((m: any) => [
        h('strong', {}, m.id),
        int(m.workers?.length ?? 0),
        (m.workers ?? []).map((w: any) => `${(w.coefficient / 1000).toFixed(2)}×`).join(', ') || '—',
        `${int((m.workers ?? []).reduce((t: number, w: any) => t + w.running_requests, 0))} / ${int((m.workers ?? []).reduce((t: number, w: any) => t + w.max_running_requests, 0))}`,
      ]),
      'No model served right now.',
      { 'data-table': 'models' },
    ),
  ]
}

async function moneyCard(): Promise<Node[]> {
  const m = await getJson('/api/money')
  const sum = (f: (p: any) => string | null) => m.proxies.reduce((t: bigint, p: any) => t + BigInt(f(p) ?? '0'), 0n)
  const balance = sum((p) => p.balanceNano)
  const stake = sum((p) => p.stakeNano)
  const spent = sum((p) => p.chargedNano)
  const spentTokens = sum((p) => p.chargedTokens)
  let cum = 0n
  const spend = m.spend as Array<{ t: number; costNano: string }>
  const points = spend.map((s) => ({ t: s.t + 60_000, y: Number((cum += BigInt(s.costNano))) / 1e9 }))
  // From zero before the first minute with spending, to now.
  if (spend.length) points.unshift({ t: spend[0].t, y: 0 }), points.push({ t: Math.max(Date.now(), points[points.length - 1].t), y: Number(cum) / 1e9 })
  return [
    h(
      'div',
      { class: 'stats' },
      stat('Balance', ton(balance), 'in client contracts', 'balance'),
      stat('Stake', ton(stake), 'kept while open'),
      stat('Available', ton(balance > stake ? balance - stake : 0n), 'balance above the stake'),
      stat('Spent', ton(spent), tokens(spentTokens, 'adjusted tokens'), 'spent'),
      m.wallet ? stat('Wallet', ton(m.wallet.balanceNano), short(m.wallet.address, 8)) : null,
    ),
    h('h3', { class: 'small muted' }, 'Per proxy'),
    table(
      ['Proxy', 'Contract', ['Balance', 'num'], ['Stake', 'num'], ['Spent', 'num'], ['Tokens charged', 'num'], ['On chain', 'num']],
      m.proxies.map((p: any) => [h('span', { class: 'hash', title: p.proxy }, short(p.proxy, 8)), stateBadge(p.contractState), ton(p.balanceNano), ton(p.stakeNano), ton(p.chargedNano), tokens(p.chargedTokens, ''), tokens(p.chargedOnChainTokens, '')]),
      'No proxy session yet.',
    ),
    h('h3', { class: 'small muted' }, 'Spend over the last 24 hours (cumulative)'),
    chart(points, (y) => `${y.toFixed(6).replace(/\.?0+$/, '')} TON`),
  ]
}

function topUpCard(network: string | null): HTMLElement {
  const amount = h('input', { type: 'text', inputmode: 'decimal', value: '1', 'aria-label': 'Amount in TON', name: 'amount' })
  const status = h('div', {})
  const devnet = network === 'devnet'
  const button = h('button', { type: 'button', 'data-action': 'topup' }, devnet ? 'Top up from the faucet' : 'Pay with TON Connect')
  button.addEventListener('click', async () => {
    button.disabled = true
    const p = progress(devnet ? 'Asking the devnet faucet, then waiting for the chain to confirm the top-up…' : 'Building the transaction…')
    status.replaceChildren(p.el)
    try {
      if (devnet) {
        const r = await postAdmin('/admin/topup', { amountTon: amount.value })
        refreshAll()
        p.done(`Confirmed on chain: +${ton(r.toppedUpNano)}; balance now ${ton(r.balanceNano)}.`, true)
      } else {
        const tx = await getJson(`/api/topup-tx?amount=${encodeURIComponent(amount.value)}`)
        p.step('Confirm the payment in your wallet…')
        const { payWithTonConnect } = await import('./tonconnect.ts')
        await payWithTonConnect(tx, (t) => p.step(t))
        p.done('Sent from your wallet. The balance updates once the chain confirms it.', true)
      }
    } catch (err) {
      p.done(`Failed: ${(err as Error).message}`, false)
    } finally {
      button.disabled = false
    }
  })
  return card(
    ['Top up', h('span', { class: 'spacer' }), badge(devnet ? 'devnet faucet' : network ?? 'off-chain', 'muted')],
    h('p', { class: 'muted small' }, devnet ? 'The devnet faucet funds this node’s wallet, which tops up its client contract.' : 'Pay from your own wallet (Tonkeeper and others) with TON Connect; the node builds the message to its client contract.'),
    h('div', { class: 'form' }, h('label', {}, 'Amount (TON)', amount), button),
    status,
  )
}

export const overview: Page = async (main, signal) => {
  const node = await getJson('/api/node')
  const net = h('div', {})
  const money = h('div', {})
  main.append(card('The network', net), h('div', { class: 'grid' }, card('My money', money)), node.network ? topUpCard(node.network) : '')
  live(net, networkCard, signal, 8_000)
  live(money, moneyCard, signal)
}

// ---- playground --------------------------------------------------------------------------------

interface Turn {
  role: 'user' | 'assistant'
  content: string
}

function curlFor(base: string, body: unknown, key: string): string {
  return `curl ${base}/v1/chat/completions \\\n  -H 'content-type: application/json' \\\n${key ? `  -H 'authorization: Bearer ${key}' \\\n` : ''}  -d '${JSON.stringify(body).replace(/'/g, "'\\''")}'`
}

function sdkFor(base: string, body: any, key: string): string {
  return `import OpenAI from 'openai'\n\nconst openai = new OpenAI({ baseURL: '${base}/v1', apiKey: ${key ? `'${key}'` : "process.env.COCOON_API_KEY ?? 'unused'"} })\nconst stream = await openai.chat.completions.create(${JSON.stringify({ ...body, stream: true }, null, 2).replace(/\n/g, '\n')})\nfor await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? '')`
}

export const playground: Page = async (main) => {
  const models = await getJson('/v1/models').catch(() => ({ data: [] }))
  const node = await getJson('/api/node')
  // The playground chats: only models served at /v1/chat/completions (not, say, a speech model).
  const chatModels = (models.data ?? []).filter((m: any) => !Array.isArray(m.endpoints) || m.endpoints.includes('/v1/chat/completions'))
  const model = h('select', { name: 'model', 'aria-label': 'Model' }, chatModels.map((m: any) => h('option', { value: m.id }, m.id)))
  const maxTokens = h('input', { type: 'number', min: 1, max: 4096, value: 64, name: 'max_tokens' })
  const temperature = h('input', { type: 'number', min: 0, max: 2, step: 0.1, value: 0.7, name: 'temperature' })
  const key = h('input', { type: 'password', name: 'api_key', placeholder: node.keysRequired ? 'required on this node' : 'optional', autocomplete: 'off' })
  const prompt = h('textarea', { name: 'prompt', placeholder: 'Tell me a story about a brave little fox', rows: 3 })
  const send = h('button', { type: 'submit', 'data-action': 'send' }, 'Send')
  const clear = h('button', { type: 'button', class: 'ghost' }, 'Clear')
  const chat = h('div', { class: 'chat', 'data-chat': '' })
  const code = h('div', {})
  const turns: Turn[] = []
  const base = location.origin

  const bodyFor = () => ({ model: model.value, messages: turns.map((t) => ({ role: t.role, content: t.content })), max_tokens: Number(maxTokens.value) || 64, temperature: Number(temperature.value) })
  const showCode = () => {
    const body = bodyFor()
    const k = key.value ? 'sk-cocoon-…' : ''
    const curl = curlFor(base, { ...body, stream: true }, k)
    const sdk = sdkFor(base, body, k)
    code.replaceChildren(
      h('div', { class: 'row' }, h('strong', { class: 'small' }, 'The same request'), h('span', { class: 'spacer' }), h('button', { type: 'button', class: 'ghost small', onclick: () => copy(curl) }, 'Copy curl'), h('button', { type: 'button', class: 'ghost small', onclick: () => copy(sdk) }, 'Copy openai SDK')),
      h('pre', { class: 'code', 'data-code': 'curl' }, curl),
      h('pre', { class: 'code', 'data-code': 'sdk' }, sdk),
    )
  }

  const form = h('form', { class: 'form' }, h('label', {}, 'Model', model), h('label', {}, 'Max tokens', maxTokens), h('label', {}, 'Temperature', temperature), h('label', {}, 'API key', key))
  const ask = h('form', { class: 'row', style: 'align-items:flex-end' }, h('label', { style: 'flex:1 1 240px' }, 'Message', prompt), h('div', { class: 'row' }, send, clear))
  ask.addEventListener('submit', async (e) => {
    e.preventDefault()
    const text = prompt.value.trim()
    if (!text || !model.value) return toast(model.value ? 'Write a message first' : 'No model is served right now')
    turns.push({ role: 'user', content: text })
    chat.append(h('div', { class: 'msg user' }, text))
    prompt.value = ''
    const out = h('span', { 'data-answer': '' })
    const meta = h('span', { class: 'meta' }, 'waiting for the first token…')
    const bubble = h('div', { class: 'msg assistant' }, out, meta)
    chat.append(bubble)
    chat.scrollTop = chat.scrollHeight
    send.disabled = true
    const started = performance.now()
    try {
      const r = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key.value ? { authorization: `Bearer ${key.value}` } : {}) },
        body: JSON.stringify({ ...bodyFor(), stream: true, stream_options: { include_usage: true } }),
      })
      if (!r.ok || !r.body) {
        const j = await r.json().catch(() => ({}))
        throw new Error(`${r.status}: ${j?.error?.message ?? r.statusText}`)
      }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader()
      let buf = ''
      let usage: any
      let answer = ''
      let firstAt = 0
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buf += value
        let i: number
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim()
          buf = buf.slice(i + 1)
          if (!line.startsWith('data:')) continue
          const data = line.slice(5).trim()
          if (data === '[DONE]') continue
          const j = JSON.parse(data)
          if (j.error) throw new Error(j.error.message)
          const d = j.choices?.[0]?.delta?.content ?? j.choices?.[0]?.text ?? ''
          if (d) {
            if (!firstAt) firstAt = performance.now()
            answer += d
            out.textContent = answer
            meta.textContent = 'streaming…'
            chat.scrollTop = chat.scrollHeight
          }
          if (j.usage) usage = j.usage
        }
      }
      turns.push({ role: 'assistant', content: answer })
      const total = performance.now() - started
      meta.textContent = usage
        ? `${tokens(usage.prompt_tokens, 'prompt')} + ${tokens(usage.completion_tokens, 'completion tokens')} · cost ${ton(usage.cost ?? 0)} · first token ${ms(firstAt - started)} · ${ms(total)}`
        : `no usage arrived: the answer may be incomplete · ${ms(total)}`
      meta.setAttribute('data-cost', String(usage?.cost ?? ''))
    } catch (err) {
      bubble.classList.add('error')
      meta.textContent = (err as Error).message
      turns.pop()
    } finally {
      send.disabled = false
      showCode()
    }
  })
  clear.addEventListener('click', () => {
    turns.length = 0
    chat.replaceChildren()
    showCode()
  })
  for (const el of [model, maxTokens, temperature, key]) el.addEventListener('change', showCode)
  showCode()
  main.append(card(['Playground', h('span', { class: 'spacer' }), badge('streaming', 'muted')], form, h('div', { style: 'height:12px' }), chat, h('div', { style: 'height:12px' }), ask), card('Code', code))
}

// ---- recent requests ----------------------------------------------------------------------------

/** Runs the checks of `cocoon receipt verify` on the node and shows each one. */
async function verifyReceipt(id: string, box: HTMLElement): Promise<void> {
  const p = progress('Checking the receipt: signature, certificate, Merkle proof on chain, cost…')
  box.replaceChildren(card(['Receipt ', h('span', { class: 'hash' }, id)], p.el))
  try {
    const r = await getJson(`/api/receipts/verify?id=${encodeURIComponent(id)}`)
    p.done(r.ok ? 'Every check holds.' : `Failed: ${r.checks.filter((c: any) => !c.ok).map((c: any) => c.name).join(', ')}`, r.ok)
    box.firstElementChild!.append(
      table(['Check', 'Result', 'Detail'], r.checks.map((c: any) => [h('strong', {}, c.name), badge(c.ok ? 'ok' : 'FAIL', c.ok ? 'good' : 'bad'), c.detail]), '', { 'data-table': 'checks' }),
    )
  } catch (err) {
    p.done(`Could not check: ${(err as Error).message}`, false)
  }
}

function receiptCell(r: any, verifyBox?: HTMLElement): Child {
  if (!r.receiptId || !r.receipt) return h('span', { class: 'muted small', title: 'No receipt for this answer (off-chain, or it failed)' }, 'usage only')
  const kind = r.receipt === 'verified' ? 'good' : r.receipt === 'committed' ? '' : 'warn'
  return h(
    'div',
    { class: 'row' },
    badge(r.receipt, kind as 'good'),
    verifyBox ? h('button', { type: 'button', class: 'ghost small', 'data-action': 'verify', onclick: () => void verifyReceipt(r.receiptId, verifyBox) }, 'Verify') : null,
  )
}

function requestsTable(list: any[], keys: Map<string, string>, verifyBox?: HTMLElement): HTMLElement {
  return table(
    ['Time', 'Model', 'Key', ['Prompt', 'num'], ['Completion', 'num'], ['Cost', 'num'], ['Latency', 'num'], 'Outcome', 'Receipt'],
    list.map((r) => [
      time(r.at),
      r.model,
      r.keyId ? keys.get(r.keyId) ?? r.keyId : h('span', { class: 'muted' }, '—'),
      tokens(r.promptTokens, ''),
      tokens(r.completionTokens, ''),
      ton(r.costNano),
      ms(r.latencyMs),
      badge(`${r.outcome}${r.status >= 400 ? ' ' + r.status : ''}`, r.outcome === 'succeeded' ? 'good' : r.outcome === 'cancelled' ? 'warn' : 'bad'),
      receiptCell(r, verifyBox),
    ]),
    'No request yet. Try the playground.',
    { 'data-table': 'requests' },
  )
}

export const requests: Page = async (main, signal) => {
  const box = h('div', {})
  const verifyBox = h('div', { 'data-verify': '' })
  main.append(card(['Recent requests', h('span', { class: 'spacer' }), h('span', { class: 'muted small' }, 'tokens are counted by the worker, cost by the proxy; receipts: held → committed → verified on chain')], box), verifyBox)
  live(
    box,
    async () => {
      const [r, k] = await Promise.all([getJson('/api/requests?limit=100'), getJson('/api/keys')])
      return requestsTable(r.requests, new Map(k.keys.map((x: any) => [x.id, x.name])), verifyBox)
    },
    signal,
  )
}

// ---- API keys -------------------------------------------------------------------------------------

export const keys: Page = async (main, signal) => {
  const models = await getJson('/v1/models').catch(() => ({ data: [] }))
  const name = h('input', { name: 'name', placeholder: 'my-telegram-bot', required: true, maxlength: 64 })
  const limit = h('input', { name: 'limit', inputmode: 'decimal', placeholder: 'no limit' })
  const period = h('select', { name: 'period' }, h('option', { value: 'day' }, 'per day'), h('option', { value: 'month', selected: true }, 'per month'))
  const allowed = h('select', { name: 'models', multiple: true, size: Math.min(3, Math.max(1, models.data?.length ?? 1)) }, (models.data ?? []).map((m: any) => h('option', { value: m.id }, m.id)))
  const create = h('button', { type: 'submit', 'data-action': 'create-key' }, 'Create key')
  const created = h('div', {})
  const list = h('div', {})
  const detail = h('div', {})
  const load = async () => {
    const k = await getJson('/api/keys')
    const mode = h('p', { class: 'small muted' }, k.keysRequired ? 'Keys are required on this node: a request without a valid key gets 401.' : 'Keys are optional on this node (it listens on loopback): a known key is still counted and limited.')
    const rows = k.keys.map((x: any) => {
      const revoke = h('button', { type: 'button', class: 'danger small', 'data-action': 'revoke', disabled: !!x.revokedAt }, x.revokedAt ? 'Revoked' : 'Revoke')
      revoke.addEventListener('click', async () => {
        if (!confirm(`Revoke the key '${x.name}'? Apps using it get 401 at once.`)) return
        try {
          await postAdmin('/admin/keys/revoke', { id: x.id })
          toast(`Revoked '${x.name}'`)
          list.replaceChildren(...(await load()))
        } catch (err) {
          toast((err as Error).message)
        }
      })
      const spent = BigInt(x.spentNano)
      const lim = x.limitNano ? BigInt(x.limitNano) : null
      const usage = h('button', { type: 'button', class: 'ghost small' }, 'Usage')
      usage.addEventListener('click', async () => {
        const [r, s] = await Promise.all([getJson(`/api/requests?limit=50&key=${x.id}`), getJson(`/api/keys?key=${x.id}`)])
        let cum = 0n
        const pts = (s.spend ?? []).map((p: any) => ({ t: p.t, y: Number((cum += BigInt(p.costNano))) / 1e9 }))
        detail.replaceChildren(card(`Usage of '${x.name}'`, chart(pts, (y) => `${y} TON`), requestsTable(r.requests, new Map([[x.id, x.name]]))))
      })
      return [
        h('strong', {}, x.name),
        h('span', { class: 'hash' }, `${x.prefix}…`),
        x.revokedAt ? badge('revoked', 'bad') : badge('active', 'good'),
        h('div', { style: 'min-width:140px' }, h('div', { class: 'small' }, `${ton(spent)}${lim ? ` of ${ton(lim)}` : ''} / ${x.period}`), meter(spent, lim)),
        x.models.length ? x.models.join(', ') : h('span', { class: 'muted' }, 'all'),
        int(x.requests),
        h('div', { class: 'row' }, usage, revoke),
      ]
    })
    return [mode, table(['Name', 'Key', 'State', 'Spent this period', 'Models', ['Requests', 'num'], ''], rows, 'No API key yet.', { 'data-table': 'keys' })]
  }
  const form = h('form', { class: 'form' }, h('label', {}, 'Name', name), h('label', {}, 'Spend limit (TON)', limit), h('label', {}, 'Period', period), h('label', {}, 'Allowed models (none = all)', allowed), create)
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    create.disabled = true
    try {
      const r = await postAdmin('/admin/keys/create', {
        name: name.value,
        limitTon: limit.value.trim() || undefined,
        period: period.value,
        models: [...allowed.selectedOptions].map((o) => o.value),
      })
      created.replaceChildren(
        h('p', { class: 'small' }, `Key '${r.info.name}' created. It is shown once; only its hash is kept.`),
        h('div', { class: 'row' }, h('code', { class: 'secret', 'data-secret': '' }, r.key), h('button', { type: 'button', class: 'ghost small', onclick: () => copy(r.key) }, 'Copy')),
      )
      name.value = ''
      list.replaceChildren(...(await load()))
    } catch (err) {
      created.replaceChildren(h('p', { class: 'msg error' }, (err as Error).message))
    } finally {
      create.disabled = false
    }
  })
  main.append(
    card('New API key', h('p', { class: 'small muted' }, 'Apps send it as “Authorization: Bearer …” — the openai SDK’s apiKey. A key over its limit gets 429 insufficient_quota.'), form, created),
    card('API keys', list),
    detail,
  )
  list.replaceChildren(...(await load()))
  if (!adminToken()) created.replaceChildren(h('p', { class: 'small muted' }, 'Creating and revoking keys needs the admin token (top right).'))
  void signal
}
