import assert from 'node:assert/strict'
import { once } from 'node:events'
import type net from 'node:net'
import { connect, createServer } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { generateCertificate } from '@libp2p/tls/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import type { MessageStream } from '@libp2p/interface'
import { COALESCE_MAX, coalescingWrites } from '../../node/native-tls.ts'

type Sender = MessageStream & { sendData: (data: Uint8ArrayList) => { sentBytes: number, canSendMore: boolean } }

/** What @libp2p/tls's connection does with a send: each buffer written to the TLS socket on its own. */
function libraryConnection (socket: TLSSocket): Sender {
  return {
    sendData (data: Uint8ArrayList) {
      let canSendMore = true
      for (const buf of data) canSendMore = socket.write(buf)
      return { sentBytes: data.byteLength, canSendMore }
    }
  } as unknown as Sender
}

/** The cleartext chunks the other end's TLS socket hands up (one per TLS record read) until `bytes` arrived. */
async function chunksOf (receiver: TLSSocket, bytes: number): Promise<number[]> {
  const sizes: number[] = []
  let got = 0
  await new Promise<void>(resolve => {
    const onData = (d: Buffer): void => {
      sizes.push(d.byteLength)
      got += d.byteLength
      if (got >= bytes) { receiver.off('data', onData); resolve() }
    }
    receiver.on('data', onData)
  })
  return sizes
}

describe('TLS writes (node/native-tls.ts coalescingWrites)', function () {
  this.timeout(20_000)
  let server: net.Server
  let sender: TLSSocket
  let receiver: TLSSocket

  before(async () => {
    const { cert, key } = await generateCertificate(await generateKeyPair('Ed25519'))
    const accepted = new Promise<TLSSocket>(resolve => {
      server = createServer({ cert, key, minVersion: 'TLSv1.3' }, s => { resolve(s) })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    sender = connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false })
    await once(sender, 'secureConnect')
    receiver = await accepted
  })
  after(() => { sender?.destroy(); receiver?.destroy(); server?.close() })

  const frame = (body: number): Uint8ArrayList => new Uint8ArrayList(new Uint8Array(12).fill(1), new Uint8Array(body).fill(2))

  it('without it, a yamux frame (a 12-byte header, then its body) reaches the peer as two records', async () => {
    const arriving = chunksOf(receiver, 112)
    libraryConnection(sender).sendData(frame(100))
    assert.deepEqual(await arriving, [12, 100])
  })

  it('with it, a small send reaches the peer as one record, and its bytes in order', async () => {
    const arriving = chunksOf(receiver, 112)
    const bytes: Buffer[] = []
    const collect = (d: Buffer): void => { bytes.push(d) }
    receiver.on('data', collect)
    const result = (coalescingWrites(libraryConnection(sender), sender) as Sender).sendData(frame(100))
    assert.deepEqual(await arriving, [112])
    receiver.off('data', collect)
    assert.deepEqual(Buffer.concat(bytes), Buffer.concat([Buffer.alloc(12, 1), Buffer.alloc(100, 2)]))
    assert.equal(result.sentBytes, 112)
  })

  it('in a send larger than COALESCE_MAX, the small buffers leave together and each large one alone (never copied to join others)', async () => {
    const size = COALESCE_MAX + 1024
    const parts = [new Uint8Array(12).fill(1), new Uint8Array(2).fill(3), new Uint8Array(144).fill(4), new Uint8Array(size).fill(2), new Uint8Array(20).fill(5)]
    const total = parts.reduce((s, p) => s + p.byteLength, 0)
    const arriving = chunksOf(receiver, total)
    const bytes: Buffer[] = []
    const collect = (d: Buffer): void => { bytes.push(d) }
    receiver.on('data', collect)
    // what Node's TLS is handed: a write of several buffers (it copies them into one) or of one
    const writes: number[][] = []
    const s = sender as unknown as { _writev: (chunks: Array<{ chunk: Buffer }>, cb: () => void) => void, _write: (chunk: Buffer, enc: string, cb: () => void) => void }
    const [writev, write] = [s._writev, s._write]
    s._writev = function (chunks, cb) { writes.push(chunks.map(c => c.chunk.byteLength)); writev.call(this, chunks, cb) }
    s._write = function (chunk, enc, cb) { writes.push([chunk.byteLength]); write.call(this, chunk, enc, cb) }
    try {
      const wrapped = coalescingWrites(libraryConnection(sender), sender) as Sender
      let result = wrapped.sendData(new Uint8ArrayList(...parts))
      // the rest of a send that filled the socket's buffer comes again once it drains (as the stream's send queue does)
      let sent = result.sentBytes
      while (sent < total) {
        if (!result.canSendMore) await once(sender, 'drain')
        result = wrapped.sendData(new Uint8ArrayList(...parts).sublist(sent))
        sent += result.sentBytes
      }
      assert.equal((await arriving)[0], 158, 'the three small buffers in one record')
    } finally {
      s._writev = writev
      s._write = write
      receiver.off('data', collect)
    }
    assert.deepEqual(Buffer.concat(bytes), Buffer.concat(parts), 'every byte, in order')
    assert.ok(writes.some(w => w.length === 1 && w[0] === size), `the large buffer was written on its own: ${JSON.stringify(writes)}`)
    assert.ok(!writes.some(w => w.length > 1 && w.includes(size)), `never with others: ${JSON.stringify(writes)}`)
  })
})
