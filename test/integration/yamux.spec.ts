import assert from 'node:assert/strict'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Libp2p } from '@libp2p/interface'
import { createHost, STREAM_WINDOW } from '../../node/host.ts'
import { ECHO, echoHandler, roundTrip } from '../utils/echo.ts'

const PAYLOAD = 6 * 1024 * 1024

/** A libp2p node built by someone else: yamux exactly as configured by default. */
async function plainPeer (initialStreamWindowSize?: number): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux(initialStreamWindowSize !== undefined ? { streamOptions: { initialStreamWindowSize, maxStreamWindowSize: 16 << 20 } } : {})],
    services: { identify: identify() }
  })
}

/** Sends PAYLOAD bytes over a new stream from `a` to `b` and reads them back. */
async function yamuxRoundTrip (a: Libp2p, b: Libp2p): Promise<{ ok: boolean, recvWindow: number }> {
  const { ok, stream } = await roundTrip(a, b, PAYLOAD)
  return { ok, recvWindow: (stream as unknown as { recvWindow: number }).recvWindow }
}

describe('yamux windows against a default-configured peer', function () {
  this.timeout(60_000)
  const nodes: Libp2p[] = []
  after(async () => { await Promise.all(nodes.map(async n => { await n.stop() })) })

  it('fleetmesh grows its receive windows within the spec: 6 MB each way with a default yamux peer, either side opening', async () => {
    const ours = await createHost()
    const theirs = await plainPeer()
    nodes.push(ours, theirs)
    await ours.handle(ECHO, echoHandler(PAYLOAD))
    await theirs.handle(ECHO, echoHandler(PAYLOAD))
    const out = await yamuxRoundTrip(ours, theirs)
    assert.ok(out.ok, 'our stream to them: bytes intact')
    assert.ok(out.recvWindow >= STREAM_WINDOW, `our receive window grew to ${out.recvWindow}`)
    assert.ok((await yamuxRoundTrip(theirs, ours)).ok, 'their stream to us: bytes intact')
  })

  it('whereas a peer that simply starts with a 4 MiB window overruns a default one (the old configuration)', async () => {
    const bigInitial = await plainPeer(4 << 20)
    const theirs = await plainPeer()
    nodes.push(bigInitial, theirs)
    await theirs.handle(ECHO, echoHandler(PAYLOAD))
    await assert.rejects(yamuxRoundTrip(bigInitial, theirs))
  })
})
