import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { withoutLoopback } from '../../node/host.ts'
import { addressReach, fieldSettings, fleetReach } from '../../node/network.ts'

describe('where a node runs, from its bootstrap addresses', () => {
  it('tells loopback, private and public addresses apart', () => {
    assert.equal(addressReach('/ip4/127.0.0.1/tcp/4001'), 'loopback')
    assert.equal(addressReach('/ip6/::1/tcp/4001'), 'loopback')
    for (const a of ['/ip4/10.1.0.1/tcp/1', '/ip4/192.168.1.2/tcp/1', '/ip4/100.64.0.1/tcp/1', '/ip6/fd00::2/tcp/1', '/ip4/0.0.0.0/tcp/1']) assert.equal(addressReach(a), 'lan', a)
    for (const a of ['/ip4/45.0.0.1/tcp/4001', '/ip6/2a00:1450::1/tcp/1', '/dns4/boot.example.org/tcp/4001']) assert.equal(addressReach(a), 'internet', a)
  })

  it('a fleet is as wide as its widest bootstrap address', () => {
    assert.equal(fleetReach([]), 'loopback')
    assert.equal(fleetReach(['/ip4/127.0.0.1/tcp/1', '/ip4/10.0.0.1/tcp/1']), 'lan')
    assert.equal(fleetReach(['/ip4/10.0.0.1/tcp/1', '/ip4/45.0.0.1/tcp/1']), 'internet')
  })

  it('on one machine nothing changes; on a LAN mDNS and no loopback; on the internet relays and a DHT server only when reachable', () => {
    assert.deepEqual(fieldSettings(['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEfuHr24fh5gmpLFA6HcHFvEXjWdNDetxQ7J9rwMRfDZz']), {})
    assert.deepEqual(fieldSettings(['/ip4/10.0.0.1/tcp/4001']), { announceLoopback: false, mdns: true })
    assert.deepEqual(fieldSettings(['/ip4/45.0.0.1/tcp/4001']), { announceLoopback: false, mdns: true, relayReservations: true, dhtServer: 'auto', privateAddresses: false })
  })

  it('announces no loopback address in the field, relayed ones through a loopback relay included', () => {
    const kept = withoutLoopback(['/ip4/127.0.0.1/tcp/1', '/ip6/::1/tcp/1', '/ip4/10.1.0.10/tcp/1', '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEfuHr24fh5gmpLFA6HcHFvEXjWdNDetxQ7J9rwMRfDZz/p2p-circuit'].map(a => multiaddr(a)))
    assert.deepEqual(kept.map(String), ['/ip4/10.1.0.10/tcp/1'])
  })
})
