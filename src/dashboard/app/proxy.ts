/// <reference lib="dom" />
// The proxy's pages: connected workers and clients, reservations and margin, commits on chain, refused peers, the ledger's health.
import { refreshAll, badge, card, chart, getJson, h, int, ms, pct, postAdmin, progress, short, stat, table, time, ton, tokens, live } from './util.ts'
import type { Page } from './util.ts'

async function overviewBox(): Promise<Node[]> {
  const [s, hist] = await Promise.all([getJson('/jsonstats'), getJson('/api/history')])
  const m = s.money
  const serving = s.serving?.ok !== false
  return [
    h(
      'div',
      { class: 'stats' },
      stat('Workers', int(s.workers.connected), `${int(s.workers.refused)} refused`, 'workers'),
      stat('Clients', int(s.clients.connected), `${int(s.clients.refused)} refused`, 'clients'),
      stat('Reserved', ton(m.reservedNano), 'worst case of requests in flight'),
      stat('Charged', ton(m.chargedNano), 'to clients, in all'),
      stat('Earned by workers', ton(m.earnedByWorkersNano)),
      stat('Margin', ton(m.marginNano), `price ${int(m.pricePerTokenNano)} / fee ${int(m.workerFeePerTokenNano)} nanoTON per token`, 'margin'),
    ),
    h('h3', { class: 'small muted' }, 'Workers'),
    table(
      ['Worker', 'Model', ['Coefficient', 'num'], ['Slots', 'num'], ['Served', 'num'], ['Fail rate', 'num'], ['Avg', 'num'], 'Evidence'],
      s.workers.list.map((w: any) => [
        h('span', { class: 'hash', title: w.id }, short(w.id, 8)),
        w.model?.id ?? '—',
        `${(w.coefficient / 1000).toFixed(2)}×`,
        `${int(w.activeRequests)} / ${int(w.maxActiveRequests)}`,
        int(w.served),
        pct(w.failRate),
        ms(w.avgRequestMs),
        badge(w.kind, w.kind === 'tdx' ? 'good' : 'warn'),
      ]),
      'No worker connected.',
      { 'data-table': 'workers' },
    ),
    h('h3', { class: 'small muted' }, 'Clients'),
    table(
      ['Client account', ['Requests', 'num'], ['Charged', 'num'], ['Tokens', 'num'], ['Vouchered', 'num']],
      m.clients.map((c: any) => [h('span', { class: 'hash', title: c.account }, short(c.account, 10)), int(c.requests), ton(c.nano), tokens(c.tokens, ''), tokens(c.voucheredTokens, '')]),
      'No client has been billed yet.',
      { 'data-table': 'clients' },
    ),
    h('h3', { class: 'small muted' }, 'Charged and margin over time'),
    chart((hist.samples as any[]).map((x) => ({ t: x.t, y: Number(BigInt(x.chargedNano)) / 1e9 })), (y) => `${y.toFixed(9).replace(/\.?0+$/, '')} TON`),
  ]
}

async function ledgerBox(): Promise<Node[]> {
  const [s, c] = await Promise.all([getJson('/jsonstats'), getJson('/api/commits')])
  const head = s.money.ledgerHead
  const last = s.money.lastCommit
  const serving = s.serving ?? { ok: true }
  const explorer = c.network === 'mainnet' ? 'https://tonviewer.com/transaction/' : c.network === 'testnet' ? 'https://testnet.tonviewer.com/transaction/' : null
  const txs = new Map((c.transactions as Array<{ seqno: number | null; hash: string; lt: string; at: number; success: boolean }>).map((t) => [t.seqno, t]))
  return [
    h(
      'div',
      { class: 'stats' },
      stat('Serving', serving.ok ? 'yes' : 'refusing', serving.reason ?? 'rollback check passed', 'serving'),
      stat('Ledger head', `#${int(head?.seqno ?? 0)}`, short(head?.hash, 8)),
      stat('Last commit on chain', last ? `#${int(last.seqno)}` : 'none yet', last ? time(last.confirmedAt) : 'commits run every settlement round'),
      stat('Uncommitted', int((head?.seqno ?? 0) - (last?.seqno ?? 0)), 'ledger events after the last commit'),
    ),
    h('p', { class: 'small muted' }, 'Rollback protection: each commit puts the ledger head (seqno, hash) in the proxy contract; at start the proxy refuses to serve from a ledger older than the chain’s last commit.'),
    h('h3', { class: 'small muted' }, 'Commits'),
    table(
      ['Seqno', 'Ledger hash', 'Confirmed', 'Transaction'],
      (c.commits as any[]).map((x) => {
        const tx = txs.get(x.seqno)
        return [
          `#${int(x.seqno)}`,
          h('span', { class: 'hash' }, short(x.hash, 10)),
          x.confirmedAt ? time(x.confirmedAt) : badge('pending', 'warn'),
          tx ? (explorer ? h('a', { href: explorer + tx.hash, target: '_blank', rel: 'noopener' }, short(tx.hash, 8)) : h('a', { href: `/api/tx?hash=${tx.hash}`, title: `lt ${tx.lt}` }, short(tx.hash, 8))) : '—',
        ]
      }),
      'No commit yet.',
      { 'data-table': 'commits' },
    ),
    h('p', { class: 'small muted' }, c.contract ? ['Proxy contract ', h('span', { class: 'hash' }, c.contract)] : 'No proxy contract: this proxy runs off-chain.'),
  ]
}

async function refusedBox(): Promise<Node[]> {
  const s = await getJson('/jsonstats')
  const list = (s.refusals ?? []) as Array<{ at: number; role: string; reason: string; peer?: string }>
  return [
    h('div', { class: 'stats' }, stat('Workers refused', int(s.workers.refused)), stat('Clients refused', int(s.clients.refused))),
    table(['Time', 'Role', 'Peer', 'Reason'], list.map((r) => [time(r.at), r.role, h('span', { class: 'hash' }, short(r.peer ?? '', 8)), r.reason]), 'No peer refused since start.', { 'data-table': 'refused' }),
  ]
}

function settleCard(): HTMLElement {
  const status = h('div', {})
  const button = h('button', { type: 'button', 'data-action': 'settle' }, 'Settle now')
  button.addEventListener('click', async () => {
    button.disabled = true
    const p = progress('Committing the ledger, charging clients and signing payouts; waiting for the transactions…')
    status.replaceChildren(p.el)
    try {
      const r = await postAdmin('/admin/settle')
      refreshAll()
      p.done(`Done: ${r.committed ? `committed #${r.committed.seqno}, ` : ''}${r.charged} client charge(s), ${r.payoutVouchers} payout voucher(s).`, true)
    } catch (err) {
      p.done(`Refused: ${(err as Error).message}`, false)
    } finally {
      button.disabled = false
    }
  })
  return card('Settlement', h('p', { class: 'small muted' }, 'A round runs on its own every few seconds; this forces one now (at most one per 10 s). Needs the admin token.'), button, h('div', { style: 'height:10px' }), status)
}

export const proxyHome: Page = async (main, signal) => {
  const o = h('div', {})
  const l = h('div', {})
  const r = h('div', {})
  main.append(card('Proxy', o), h('div', { class: 'grid' }, card('Ledger health and commits', l), h('div', { style: 'display:grid;gap:16px;align-content:start' }, card('Refused peers', r), settleCard())))
  live(o, overviewBox, signal)
  live(l, ledgerBox, signal, 8_000)
  live(r, refusedBox, signal, 8_000)
}
