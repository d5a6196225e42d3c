/**
 * Peers that hang up at once are not redialled at once (node/redial-backoff.ts).
 * A node outside a fleet, bootstrapping to the fleet's bootstrap peer, is
 * refused after every handshake; libp2p redialled it some 50 times a second,
 * each a TLS handshake on the bootstrap and each against the connections a
 * second it takes from one address, so an honest node's dial from the same
 * address was reset. Real libp2p nodes on loopback.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { startBootstrap } from '../../bootstrap/bootstrap.ts'
import { loadOrCreateKey } from '../../node/host.ts'
import { localFleet } from '../../node/membership/credentials.ts'
import { RedialBackoff } from '../../node/redial-backoff.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

describe('peers that hang up at once are not redialled at once', function () {
  this.timeout(60_000)

  it('after the free hang-ups a peer waits, twice as long each time up to the cap; a lasting connection clears it', () => {
    let now = 1_000_000
    const b = new RedialBackoff({ shortMs: 2000, free: 2, baseMs: 1000, maxMs: 4000, maxPeers: 2 }, () => now)
    const hangUp = (peer = 'p'): void => { b.closed(peer, now - 10) }
    hangUp(); hangUp()
    assert.equal(b.waits('p'), false, 'the free hang-ups are redialled at once')
    const waits = [3, 4, 5, 6].map(() => { hangUp(); return b.waitMs('p') })
    assert.deepEqual(waits, [1000, 2000, 4000, 4000])
    now += 3999
    assert.equal(b.waits('p'), true)
    now += 1
    assert.equal(b.waits('p'), false, 'the wait ends')
    b.closed('p', now - 2000)
    hangUp()
    assert.equal(b.waits('p'), false, 'a connection that lasted cleared the count')
    // only so many peers are remembered, the oldest forgotten first
    for (let i = 0; i < 3; i++) hangUp('p')
    hangUp('q'); hangUp('r')
    assert.equal(b.waitMs('p'), 0, 'the oldest peer was forgotten')
  })

  it('a hang-up is a connection this node dialled that left it none to the peer: not one dialled in, nor one replaced', () => {
    let now = 1_000_000
    const b = new RedialBackoff({ free: 0 }, () => now)
    let onClose!: (evt: { detail: unknown }) => void
    let open: unknown[] = []
    b.watch({ addEventListener: (_: string, f: any) => { onClose = f }, getConnections: () => open } as any)
    const conn = (direction: string, status = 'closed'): unknown => ({ direction, status, remotePeer: { toString: () => 'p' }, timeline: { open: now - 10 } })
    const close = (c: unknown): void => { onClose({ detail: c }) }
    close(conn('inbound'))
    assert.equal(b.waits('p'), false, 'a connection the peer dialled')
    const direct = conn('outbound', 'open')
    const relayed = conn('outbound')
    open = [relayed, direct]
    close(relayed)
    assert.equal(b.waits('p'), false, 'a connection replaced by another that stays open')
    open = [direct]
    close(direct)
    assert.equal(b.waits('p'), true, 'the last one, dialled here, closed at once')
    now += 1000
    assert.equal(b.waits('p'), false)
  })

  it('a node the fleet refuses dials its bootstrap a few times in seconds, not dozens a second', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fm-redial-'))
    const stops: Array<() => Promise<void>> = []
    try {
      const fleet = 'redial-test'
      const members = await localFleet(fleet, loadOrCreateKey)
      const bootKey = join(dir, 'boot.key')
      const boot = await startBootstrap({ keyFile: bootKey, listen: ['/ip4/127.0.0.1/tcp/0'], fleet, credentials: await members.forKeyFile(bootKey, { roles: ['bootstrap'] }) })
      stops.push(async () => { await boot.stop() })
      // no credentials: the bootstrap gives it its proof deadline, then refuses it for a while
      const outsider = await testNode({ fleet, bootstrap: boot.addrs })
      stops.push(async () => { await outsider.node.stop() })
      const bootPeer = boot.host.peerId.toString()
      const opened: number[] = []
      outsider.host.addEventListener('connection:open', (evt) => { if (evt.detail.remotePeer.toString() === bootPeer) opened.push(Date.now()) })
      await until(() => opened.length >= 2, 30_000, 'a refused redial')
      await new Promise(resolve => setTimeout(resolve, 4000))
      const recent = opened.filter(t => t > Date.now() - 4000).length
      assert.ok(recent <= 6, `${recent} connections to the bootstrap in 4 s (${opened.length} in all)`)
      // a member dials the same bootstrap from the same address, as a car behind the same NAT would
      const member = await testNode({ bootstrap: boot.addrs, credentials: await members.client() })
      stops.push(async () => { await member.node.stop() })
      const conn = await member.host.dial(multiaddr(boot.addrs[0]), { signal: AbortSignal.timeout(5000) })
      assert.equal(conn.status, 'open')
    } finally {
      for (const stop of stops.reverse()) await stop().catch(() => {})
      await rm(dir, { recursive: true, force: true })
    }
  })
})
