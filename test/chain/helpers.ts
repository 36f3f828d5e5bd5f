// Shared helpers for the devnet chain tests: temp dirs, raw JSON-RPC calls, the faucet.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export function tempDir(prefix = 'cocoon-chain-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export interface RawReply {
  status: number
  body: Record<string, any>
}

export async function postJson(url: string, body: unknown): Promise<RawReply> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { status: res.status, body: (await res.json()) as Record<string, any> }
}

export function rpc(endpoint: string, method: string, params: Record<string, unknown>, id: unknown = 'test-1'): Promise<RawReply> {
  return postJson(endpoint, { id, jsonrpc: '2.0', method, params })
}

export async function faucet(baseUrl: string, address: string, amount: bigint | string): Promise<{ balance: bigint; lt: string; hash: string }> {
  const r = await postJson(`${baseUrl}/devnet/faucet`, { address, amount: amount.toString() })
  if (r.status !== 200 || !r.body.ok) throw new Error(`faucet failed: ${r.status} ${JSON.stringify(r.body)}`)
  return { balance: BigInt(r.body.result.balance), lt: r.body.result.transaction_id.lt, hash: r.body.result.transaction_id.hash }
}
