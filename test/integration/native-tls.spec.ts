import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tcp } from '@libp2p/tcp'
import { tls } from '@libp2p/tls'
import { generateCertificate } from '@libp2p/tls/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { Libp2p } from '@libp2p/interface'
import { createHost } from '../../node/host.ts'
import { VerifiedCertificates, tlsConnections } from '../../node/native-tls.ts'
import { ECHO, echoHandler, roundTrip } from '../utils/echo.ts'
import { until } from '../utils/until.ts'

const PAYLOAD = 3 * 1024 * 1024

/** A libp2p node built by someone else: @libp2p/tls as it comes. */
async function libraryTlsPeer (): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [tls()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
}

/** Sends PAYLOAD bytes from `a` to `b` and back; and the encryption of the connection it went over. */
async function tlsRoundTrip (a: Libp2p, b: Libp2p): Promise<{ ok: boolean, encryption?: string }> {
  const { ok } = await roundTrip(a, b, PAYLOAD)
  return { ok, encryption: a.getConnections(b.peerId)[0]?.encryption }
}

/** Whether the server closes a socket within `ms`. */
async function closedWithin (s: net.Socket, ms: number): Promise<boolean> {
  return await new Promise(resolve => {
    const t = setTimeout(() => { resolve(false) }, ms)
    s.once('close', () => { clearTimeout(t); resolve(true) })
  })
}

/** A multistream-select message: varint length, then the protocol and a newline. */
const mss = (p: string): Buffer => { const b = Buffer.from(`${p}\n`); return Buffer.concat([Buffer.from([b.byteLength]), b]) }

describe('TLS on the TCP socket itself (node/native-tls.ts)', function () {
  this.timeout(60_000)
  const nodes: Libp2p[] = []
  const sockets: net.Socket[] = []
  after(async () => {
    for (const s of sockets) s.destroy()
    await Promise.all(nodes.map(async n => { await n.stop() }))
  })

  it('speaks TLS with @libp2p/tls peers, either side dialing, on the socket path', async () => {
    const ours = await createHost({ encryption: ['tls'] })
    const theirs = await libraryTlsPeer()
    nodes.push(ours, theirs)
    await ours.handle(ECHO, echoHandler(PAYLOAD))
    await theirs.handle(ECHO, echoHandler(PAYLOAD))
    const before = tlsConnections.socket
    const out = await tlsRoundTrip(ours, theirs)
    assert.ok(out.ok, 'our stream to them: 3 MB intact')
    assert.equal(out.encryption, '/tls/1.0.0')
    await ours.hangUp(theirs.peerId)
    // they may not have seen the close yet, and would open a stream on the closed connection
    for (let i = 0; i < 100 && theirs.getConnections(ours.peerId).length > 0; i++) await new Promise(resolve => setTimeout(resolve, 50))
    const back = await tlsRoundTrip(theirs, ours)
    assert.ok(back.ok, 'their stream to us: 3 MB intact')
    assert.equal(tlsConnections.socket - before, 2, 'both connections took the socket path on our side')
  })

  it('refuses a peer other than the one dialed, also when its certificate was verified before', async () => {
    const a = await createHost({ encryption: ['tls'] })
    const b = await createHost({ encryption: ['tls'] })
    const c = await createHost({ encryption: ['tls'] })
    nodes.push(a, b, c)
    const addr = b.getMultiaddrs()[0]
    await a.dial(addr)
    await a.hangUp(b.peerId)
    // b's address, but c's identity: b presents the certificate a already verified
    const lie = multiaddr(`${addr.decapsulate('/p2p').toString()}/p2p/${c.peerId.toString()}`)
    await assert.rejects(a.dial(lie, { signal: AbortSignal.timeout(10_000) }), (err: Error) => /UnexpectedPeer|not of|peer/i.test(`${err.name} ${err.message}`))
    assert.equal((await a.dial(addr)).remotePeer.toString(), b.peerId.toString(), 'the right peer is still reached')
  })

  it('a peer refused right after the handshake (a gater) is cut off, and the node lives on', async () => {
    // this aborted the TCP socket from inside TLS's read of it: a segfault before node/native-tls.ts's handOver
    let refused = 0
    const host = await createHost({ encryption: ['tls'], connectionGater: { denyInboundEncryptedConnection: async () => { refused++; return true } } })
    const outsider = await createHost({ encryption: ['tls'] })
    nodes.push(host, outsider)
    for (let i = 0; i < 5; i++) await outsider.dial(host.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) }).then(async c => { await new Promise(resolve => setTimeout(resolve, 100)); return c }).catch(() => undefined)
    assert.ok(refused >= 1, `the gater was asked (${refused})`)
    await until(() => host.getConnections().length === 0, 5000, 'the outsider cut off').catch(() => {})
    assert.deepEqual(host.getConnections().map(c => c.remotePeer.toString()), [], 'no connection of the outsider stays')
  })

  it('a peer that negotiates TLS and then sends garbage loses its socket, not the node', async () => {
    const host = await createHost({ encryption: ['tls'] })
    nodes.push(host)
    const port = Number(host.getMultiaddrs()[0].toString().split('/')[4])
    const s = net.connect(port, '127.0.0.1')
    sockets.push(s)
    s.on('error', () => {})
    s.resume()
    await new Promise(resolve => s.once('connect', resolve))
    s.write(Buffer.concat([mss('/multistream/1.0.0'), mss('/tls/1.0.0')]))
    await new Promise(resolve => setTimeout(resolve, 200))
    s.write(randomBytes(4096))
    assert.ok(await closedWithin(s, 10_000), 'the socket was closed')
    const peer = await createHost({ encryption: ['tls'] })
    nodes.push(peer)
    assert.equal((await peer.dial(host.getMultiaddrs()[0])).remotePeer.toString(), host.peerId.toString(), 'the node still serves')
  })
})

describe('VerifiedCertificates', () => {
  it('names the peer of a good certificate, rejects a tampered one and an unexpected peer, cached or not', async () => {
    const keyA = await generateKeyPair('Ed25519')
    const keyB = await generateKeyPair('Ed25519')
    const der = (pem: string): Uint8Array => new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))
    const a = der((await generateCertificate(keyA)).cert)
    const certs = new VerifiedCertificates(2)
    assert.equal((await certs.peerOf(a)).toString(), peerIdFromPrivateKey(keyA).toString())
    assert.equal((await certs.peerOf(a, peerIdFromPrivateKey(keyA))).toString(), peerIdFromPrivateKey(keyA).toString(), 'cached, expected peer')
    await assert.rejects(certs.peerOf(a, peerIdFromPrivateKey(keyB)), /not of/, 'cached, another peer expected')
    // one bit of the libp2p extension's signature flipped (near the end of the to-be-signed part)
    const tampered = a.slice()
    const sigStart = a.byteLength - 80
    tampered[sigStart - 10] ^= 1
    await assert.rejects(certs.peerOf(tampered))
    // the cache holds two: a third certificate pushes the oldest out, which is verified again when it returns
    await certs.peerOf(der((await generateCertificate(keyB)).cert))
    await certs.peerOf(der((await generateCertificate(keyB)).cert))
    assert.equal((await certs.peerOf(a)).toString(), peerIdFromPrivateKey(keyA).toString())
  })
})
