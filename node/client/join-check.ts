/**
 * Whether a client got into its fleet: one of the bootstrap peers it was
 * given proved membership of the fleet to it (in an open fleet: speaks the
 * fleet's DHT protocol). The CLI asks before it does anything else, so a
 * wrong address, a bootstrap peer that is down or credentials of another
 * fleet fail at once with the reason, instead of as an empty answer or a
 * timeout later ("no vehicles heard", "no provider found in the DHT").
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { IdentifyResult, Libp2p, PeerId } from '@libp2p/interface'
import { fleetOfProtocols, kadProtocol } from '../../protocols/ids.ts'
import type { Membership } from '../membership/membership.ts'

export class FleetJoinError extends Error {
  readonly name = 'FleetJoinError'
  readonly code = 'ERR_FLEET_JOIN'
}

export interface JoinCheckComponents {
  host: Pick<Libp2p, 'getConnections' | 'addEventListener' | 'removeEventListener' | 'peerStore'>
  /** Absent in an open fleet. */
  membership?: Pick<Membership, 'isMember' | 'addEventListener' | 'removeEventListener'>
}

/** The peer id a bootstrap address names (its last `/p2p/` part), if any. */
function peerOf (addr: string): string | undefined {
  try { return multiaddr(addr).getComponents().findLast(c => c.name === 'p2p')?.value } catch { return undefined }
}

/**
 * For a client of the open fleet `fleet`: undefined when a peer speaking
 * `protocols` serves that fleet, else why it does not (the fleet it serves).
 */
export function openFleetMismatch (fleet: string, protocols: string[]): string | undefined {
  if (protocols.includes(kadProtocol(fleet))) return undefined
  const spoken = fleetOfProtocols(protocols)
  if (spoken === undefined) return 'it is not a fleetmesh peer'
  return spoken.membersOnly ? `it is in fleet ${spoken.fleet}, which takes members only (give --credentials)` : `it is in the open fleet ${spoken.fleet}, not ${fleet}`
}

/**
 * Resolves with the first bootstrap peer that proved membership of `fleet`
 * (in an open fleet: that speaks its DHT protocol). Rejects with a
 * FleetJoinError when every bootstrap peer refused this one, did not take
 * its certificate or is of another fleet (each reason named), or when none
 * did either before `signal` aborts.
 */
export async function joinedFleet (c: JoinCheckComponents, bootstrap: string[], fleet: string, signal: AbortSignal): Promise<string> {
  const ids = bootstrap.map(peerOf).filter(p => p !== undefined)
  const wanted = (peer: string): boolean => ids.length === 0 || ids.includes(peer)
  const refused = new Map<string, string>()
  const open = new Set<string>()
  const hint = c.membership !== undefined
    ? `this peer's credentials are for fleet ${fleet} (\`fleetmesh fleet show <file>\` tells which fleet and authority a file is for)`
    : `this peer is in the open fleet ${fleet}`
  const reasons = (): string => [...refused].map(([p, r]) => `${p.slice(-6)}: ${r}`).join('; ')
  return await new Promise<string>((resolve, reject) => {
    const check = (): void => {
      const peer = c.host.getConnections().map(conn => conn.remotePeer.toString()).find(p => wanted(p) && (c.membership?.isMember(p) ?? open.has(p)))
      if (peer !== undefined) { done(); resolve(peer); return }
      if (ids.length > 0 && ids.every(p => refused.has(p))) {
        done()
        reject(new FleetJoinError(`every bootstrap peer refused this peer: ${reasons()}; ${hint}`))
      }
    }
    const onRefused = (evt: CustomEvent<{ peer: string, reason: string }>): void => {
      if (wanted(evt.detail.peer)) refused.set(evt.detail.peer, evt.detail.reason)
      check()
    }
    // an open fleet has no proofs: a bootstrap peer is in it when it speaks the fleet's DHT
    const judge = (peer: PeerId, protocols: string[]): void => {
      const p = peer.toString()
      if (!wanted(p)) return
      const why = openFleetMismatch(fleet, protocols)
      if (why === undefined) open.add(p)
      else refused.set(p, why)
      check()
    }
    const onIdentify = (evt: CustomEvent<IdentifyResult>): void => { judge(evt.detail.peerId, evt.detail.protocols) }
    const onAbort = (): void => {
      done()
      const what = c.membership !== undefined ? `proved membership of fleet ${fleet}` : `served the open fleet ${fleet}`
      reject(new FleetJoinError(`no bootstrap peer ${what} in time (${bootstrap.join(', ')})` +
        (refused.size > 0 ? `: ${reasons()}; ${hint}` : ': is it running, and is this the address it printed?')))
    }
    const done = (): void => {
      c.membership?.removeEventListener('proven', check)
      c.membership?.removeEventListener('refused', onRefused)
      c.membership?.removeEventListener('declined', onRefused)
      c.host.removeEventListener('peer:identify', onIdentify)
      signal.removeEventListener('abort', onAbort)
    }
    if (c.membership !== undefined) {
      c.membership.addEventListener('proven', check)
      c.membership.addEventListener('refused', onRefused)
      c.membership.addEventListener('declined', onRefused)
    } else {
      c.host.addEventListener('peer:identify', onIdentify)
      // peers identified before this was asked (before identify, the store holds no fleetmesh protocol of theirs)
      for (const conn of c.host.getConnections()) {
        void c.host.peerStore.get(conn.remotePeer).then(p => { if (p.protocols.some(x => x.startsWith('/fleetmesh/'))) judge(conn.remotePeer, p.protocols) }, () => {})
      }
    }
    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) { onAbort(); return }
    check()
  })
}
