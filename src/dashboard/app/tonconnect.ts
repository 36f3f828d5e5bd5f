/// <reference lib="dom" />
// TON Connect: the app user's own wallet (Tonkeeper…) pays the top-up the node built. Loaded only when used (its own chunk).
import { TonConnectUI } from '@tonconnect/ui'

let ui: TonConnectUI | undefined

/** Connects a wallet if none is, then asks it to send `tx` (address, amount, payload and state init from the node). */
export async function payWithTonConnect(tx: { validUntil: number; network?: string; messages: Array<{ address: string; amount: string; payload?: string; stateInit?: string }> }, step: (text: string) => void): Promise<void> {
  // The manifest is served by this node; a wallet on another device fetches it, so the dashboard must be on a reachable https origin then.
  ui ??= new TonConnectUI({ manifestUrl: `${location.origin}/tonconnect-manifest.json` })
  await ui.connectionRestored
  if (!ui.connected) {
    step('Choose your wallet…')
    await ui.openModal()
    await new Promise<void>((resolve, reject) => {
      const stop = ui!.onStatusChange(
        (w) => {
          if (w) {
            stop()
            resolve()
          }
        },
        (err) => {
          stop()
          reject(err)
        },
      )
      ui!.onModalStateChange((s) => {
        if (s.status === 'closed' && !ui!.connected) {
          stop()
          reject(new Error('no wallet connected'))
        }
      })
    })
  }
  step('Confirm the payment in your wallet…')
  await ui.sendTransaction({ validUntil: tx.validUntil, network: tx.network as never, messages: tx.messages })
}
