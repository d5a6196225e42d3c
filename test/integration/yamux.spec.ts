import assert from 'node:assert/strict'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Libp2p, Stream } from '@libp2p/interface'
import { createHost, STREAM_WINDOW } from '../../node/host.ts'
import { drained } from '../../node/util/drain.ts'
import { ECHO, echoHandler, roundTrip } from '../utils/echo.ts'

const PAYLOAD = 6 * 1024 * 1024
const SINK = '/fleetmesh-test/sink/1.0.0'

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

  it('fleetmesh sends window updates lazily: none while more than half the receive window is open, one once more is used', async () => {
    const MiB = 1024 * 1024
    const [a, b] = [await createHost(), await createHost()]
    nodes.push(a, b)
    let inbound: Stream | undefined
    let got = 0
    let waiting: { bytes: number, resolve: () => void } | undefined
    await b.handle(SINK, async (stream) => {
      inbound = stream
      for await (const d of stream) {
        got += d.byteLength
        if (waiting !== undefined && got >= waiting.bytes) waiting.resolve()
      }
    })
    const s = await a.dialProtocol(b.getMultiaddrs()[0], SINK)
    /** Sends `bytes` more in 64 KiB writes and waits until the receiver has them all. */
    const send = async (bytes: number): Promise<void> => {
      const arrived = new Promise<void>(resolve => { waiting = { bytes: got + bytes, resolve } })
      for (let sent = 0; sent < bytes; sent += 64 * 1024) if (!s.send(new Uint8Array(64 * 1024))) await drained(s)
      await arrived
    }
    const window = (): { recvWindow: number, recvWindowCapacity: number } => inbound as unknown as { recvWindow: number, recvWindowCapacity: number }
    await send(MiB)
    assert.equal(window().recvWindow, STREAM_WINDOW)
    // used: the MiB and the few bytes of protocol negotiation; an update would have opened the whole window again
    const open = window().recvWindowCapacity
    assert.ok(open <= STREAM_WINDOW - MiB && open > STREAM_WINDOW - MiB - 1024, `no window update for the first MiB of a 4 MiB window (${open} open)`)
    await send(1.5 * MiB)
    assert.ok(window().recvWindowCapacity > window().recvWindow - MiB, `an update once more than half was used (${window().recvWindowCapacity} of ${window().recvWindow} open)`)
    // and a sender is never left waiting: 12 MiB more, three windows' worth, arrive
    await send(12 * MiB)
    assert.equal(got, 14.5 * MiB)
    await s.close()
  })

  it('whereas a peer that simply starts with a 4 MiB window overruns a default one (the old configuration)', async () => {
    const bigInitial = await plainPeer(4 << 20)
    const theirs = await plainPeer()
    nodes.push(bigInitial, theirs)
    await theirs.handle(ECHO, echoHandler(PAYLOAD))
    await assert.rejects(yamuxRoundTrip(bigInitial, theirs))
  })
})
