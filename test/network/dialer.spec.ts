/**
 * PeerDialer's per-message questions (node/dial.ts): whether a peer is on
 * this machine, and a peer id parsed from its string, both asked for every
 * hop and result, answered from what it keeps. Two real hosts on loopback.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { PeerDialer } from '../../node/dial.ts'
import { createHost } from '../../node/host.ts'
import type { Host } from '../../node/host.ts'

describe('PeerDialer: peer ids and loopback, kept', function () {
  this.timeout(30_000)
  let a: Host
  let b: Host
  before(async () => { [a, b] = [await createHost({ fleet: 'dialer-test' }), await createHost({ fleet: 'dialer-test' })] })
  after(async () => { await Promise.all([a?.stop(), b?.stop()]) })

  it('says a peer connected over loopback is on this machine, and one it has no connection to is not', async () => {
    const dialer = new PeerDialer(a)
    const peer = b.peerId.toString()
    assert.equal(dialer.sameHost(peer), false, 'no connection yet')
    await a.dial(b.getMultiaddrs()[0])
    assert.equal(dialer.sameHost(peer), true)
    // asked again, the same answer from the parsed id and the connection it has seen
    assert.equal(dialer.sameHost(peer), true)
    assert.equal(dialer.sameHost('not-a-peer-id'), false, 'a malformed id is no peer of this machine')
    await a.hangUp(b.peerId)
    assert.equal(dialer.sameHost(peer), false, 'the connection closed')
  })

  it('parses each peer id once, keeps at most 1,024, and refuses a malformed one', async () => {
    const dialer = new PeerDialer(a)
    const ids = await Promise.all(Array.from({ length: 1030 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    const first = dialer.idOf(ids[0])
    assert.equal(first.toString(), ids[0])
    assert.equal(dialer.idOf(ids[0]), first, 'the same object: parsed once')
    for (const id of ids) assert.equal(dialer.idOf(id).toString(), id)
    // the oldest went first: parsed anew, equal but not the object kept before
    assert.notEqual(dialer.idOf(ids[0]), first)
    assert.ok(dialer.idOf(ids[0]).equals(first))
    assert.throws(() => dialer.idOf('12D3KooWnot-base58!'))
  })
})
