/// <reference lib="dom" />
// The worker's pages: what it earned and why, what it served, its payouts, and what it presents (model, attestation, certificate).
import { refreshAll, badge, card, chart, getJson, h, int, live, pct, postAdmin, progress, short, stat, stateBadge, table, time, ton, tokens } from './util.ts'
import type { Page } from './util.ts'

async function earnings(): Promise<Node[]> {
  const [s, hist] = await Promise.all([getJson('/jsonstats'), getJson('/api/history')])
  const price = (p: any) => (BigInt(p.earned.tokens) > 0n ? (BigInt(p.earned.nano) * 1_000_000n) / BigInt(p.earned.tokens) : 0n)
  const perProxy = s.proxies.map((p: any) => {
    const earnedTokens = BigInt(p.earned.tokens)
    const paidTokens = BigInt(p.paidOnChainTokens)
    // nanoTON per adjusted token, from this proxy's statement (micro-precision), to value paid and pending tokens.
    const unit = price(p)
    const paidNano = (paidTokens * unit) / 1_000_000n
    return { p, earnedTokens, paidTokens, paidNano, pendingNano: BigInt(p.earned.nano) - paidNano, pendingTokens: earnedTokens - paidTokens }
  })
  const total = (f: (x: (typeof perProxy)[number]) => bigint) => perProxy.reduce((t: bigint, x: any) => t + f(x), 0n)
  const r = s.requests
  const done = (r.succeeded ?? 0) + (r.failed ?? 0)
  const samples = hist.samples as Array<Record<string, any>>
  const first = samples[0]
  const last = samples[samples.length - 1]
  const tps = last && first && last.t > first.t ? (Number(BigInt(last.earnedTokens) - BigInt(first.earnedTokens)) / ((last.t - first.t) / 1000)) : null
  const completion = s.tokens?.completion ?? s.tokens?.completionTokens
  return [
    h(
      'div',
      { class: 'stats' },
      stat('Earned', ton(total((x) => BigInt(x.p.earned.nano))), tokens(total((x) => x.earnedTokens), 'adjusted tokens'), 'earned'),
      stat('Paid out on chain', ton(total((x) => x.paidNano)), tokens(total((x) => x.paidTokens), 'adjusted tokens'), 'paid'),
      stat('Pending', ton(total((x) => x.pendingNano)), tokens(total((x) => x.pendingTokens), 'adjusted tokens'), 'pending'),
      stat('Requests served', int(r.succeeded ?? 0), `${pct(done ? (r.succeeded ?? 0) / done : null)} success`, 'served'),
      stat('Throughput', tps === null ? '—' : `${tps.toFixed(1)} tok/s`, completion !== undefined ? `${tokens(completion, 'completion tokens')} in all` : 'adjusted tokens, since start'),
    ),
    h('h3', { class: 'small muted' }, 'Per proxy'),
    table(
      ['Proxy', 'State', ['Earned', 'num'], ['Paid on chain', 'num'], ['Pending', 'num'], ['Vouchered', 'num'], 'Reliability record'],
      perProxy.map((x: any) => [
        h('span', { class: 'hash', title: x.p.proxyId ?? '' }, short(x.p.proxyId, 8)),
        stateBadge(x.p.state),
        h('span', {}, ton(x.p.earned.nano), h('div', { class: 'small muted' }, tokens(x.p.earned.tokens))),
        h('span', {}, ton(x.paidNano), h('div', { class: 'small muted' }, tokens(x.paidTokens))),
        ton(x.pendingNano),
        tokens(x.p.voucheredTokens),
        x.p.reliability ? `${pct(x.p.reliability.successRate)} over ${int(x.p.reliability.requests)}` : h('span', { class: 'muted small' }, 'not published by this proxy yet'),
      ]),
      'Not connected to a proxy yet.',
      { 'data-table': 'earnings' },
    ),
    h('h3', { class: 'small muted' }, 'Earned over time'),
    chart(samples.map((x) => ({ t: x.t, y: Number(BigInt(x.earnedNano)) / 1e9 })), (y) => `${y.toFixed(9).replace(/\.?0+$/, '')} TON`),
  ]
}

function payoutCard(): HTMLElement {
  const status = h('div', {})
  const button = h('button', { type: 'button', 'data-action': 'payout' }, 'Claim payout')
  button.addEventListener('click', async () => {
    button.disabled = true
    const p = progress('Claiming the latest vouchers and waiting for the payout transactions…')
    status.replaceChildren(p.el)
    try {
      const r = await postAdmin('/admin/payout')
      const n = r.payouts.length
      refreshAll()
      p.done(`Done: ${n} proxy voucher${n === 1 ? '' : 's'} settled (${r.payouts.map((x: any) => tokens(x.tokensPaid, 'tokens paid')).join(', ') || 'nothing to claim'}); wallet ${ton(r.walletBalanceNano)}.`, true)
    } catch (err) {
      p.done(`Refused: ${(err as Error).message}`, false)
    } finally {
      button.disabled = false
    }
  })
  return card('Payout', h('p', { class: 'small muted' }, 'Runs `cocoon worker payout`: submits each proxy’s latest signed voucher to this worker’s contract, which pays the wallet. Needs the admin token.'), button, h('div', { style: 'height:10px' }), status)
}

async function nodeCard(): Promise<Node[]> {
  const [s, n] = await Promise.all([getJson('/jsonstats'), getJson('/api/node')])
  const a = n.attestation ?? {}
  return [
    h(
      'dl',
      { class: 'kv' },
      h('dt', {}, 'Model'),
      h('dd', {}, h('strong', {}, s.model.id)),
      h('dt', {}, 'Model hash'),
      h('dd', { class: 'hash' }, s.model.hash || '—'),
      h('dt', {}, 'Price coefficient'),
      h('dd', {}, `${(s.coefficient / 1000).toFixed(2)}×`),
      h('dt', {}, 'Slots'),
      h('dd', {}, `${int(s.activeRequests)} busy of ${int(s.maxActiveRequests)}`),
      h('dt', {}, 'Attestation'),
      h('dd', {}, badge(a.kind ?? s.identity.kind, a.kind === 'tdx' ? 'good' : 'warn'), a.quoteBytes ? h('span', { class: 'muted small' }, ` quote ${int(a.quoteBytes)} bytes`) : ''),
      h('dt', {}, 'Image hash'),
      h('dd', { class: 'hash' }, a.imageHash ?? '—'),
      h('dt', {}, 'Identity key'),
      h('dd', { class: 'hash' }, s.identity.publicKey),
      h('dt', {}, 'Certificate'),
      h('dd', {}, `made ${time(n.certificate.createdAt)} · renews ${time(n.certificate.renewsAt)}`),
      h('dt', {}, 'Wallet'),
      h('dd', {}, n.wallet ? `${ton(n.wallet.balanceNano)} · ` : '—', n.wallet ? h('span', { class: 'hash' }, n.wallet.address) : ''),
    ),
  ]
}

export const workerHome: Page = async (main, signal) => {
  const e = h('div', {})
  const n = h('div', {})
  main.append(card('Earnings', e), h('div', { class: 'grid' }, payoutCard(), card('What this worker presents', n)))
  live(e, earnings, signal)
  live(n, nodeCard, signal, 15_000)
}
