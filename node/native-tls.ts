/**
 * libp2p's TLS 1.3 (the spec @libp2p/tls implements, same protocol id, same
 * certificates, same bytes on the wire) run by Node's TLS on the TCP socket
 * itself.
 *
 * @libp2p/tls hands Node's TLS a JavaScript duplex made from the connection,
 * so every record crosses into JavaScript twice and Node wraps the duplex in
 * a JSStreamSocket; over a TCP connection of @libp2p/tcp the socket is
 * there, and Node's TLS can sit directly on its handle (`tls.connect({ socket
 * })` with a net.Socket: records are encrypted, decrypted and written in C++).
 * bench/transport.ts compares the two. Connections that have no TCP socket of
 * their own (a relayed circuit) take @libp2p/tls's path unchanged.
 *
 * Each host also makes its certificate once, as it starts (the spec allows
 * reusing it; the library makes a new one for every connection, most of a
 * handshake's cost), checks a peer's certificate with Node's X.509
 * (node/tls-certificate.ts) and remembers the certificates it checked, by
 * their bytes, so a peer that connects again is not checked again.
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import { TLSSocket, connect, createSecureContext } from 'node:tls'
import type { SecureContext } from 'node:tls'
import { InvalidCryptoExchangeError, TimeoutError, UnexpectedPeerError, serviceCapabilities } from '@libp2p/interface'
import type { ComponentLogger, ConnectionEncrypter, MessageStream, PeerId, PrivateKey, SecureConnectionOptions, SecuredConnection, StreamMuxerFactory, Upgrader } from '@libp2p/interface'
import { tls } from '@libp2p/tls'
import { generateCertificate, toMessageStream } from '@libp2p/tls/utils'
import { certificatePeer } from './tls-certificate.ts'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface NativeTlsComponents {
  privateKey: PrivateKey
  logger: ComponentLogger
  upgrader: Upgrader
}

/** Certificates remembered as verified, at most. */
const VERIFIED_MAX = 4096
/** A connection with no traffic this long is closed, as @libp2p/tcp does. @default 2 minutes */
const INACTIVITY_MS = 2 * 60 * 1000

/** The parts of @libp2p/tcp's connection this relies on (checked at run time). */
interface TcpConnection {
  socket: net.Socket
  readBuffer: Uint8ArrayList
  inactivityTimeout?: number
}

/** The TCP socket under a connection, when it has one Node's TLS can take over. */
function tcpSocketOf (c: MessageStream): TcpConnection | undefined {
  const t = c as unknown as Partial<TcpConnection>
  if (!(t.socket instanceof net.Socket) || t.socket.destroyed || t.readBuffer === undefined) return undefined
  return t as TcpConnection
}

/**
 * Takes the socket from @libp2p/tcp's connection: its reader is removed and
 * any bytes it read but did not deliver go back to the socket, where TLS
 * reads them first. Synchronous, so nothing arrives in between.
 */
function detach (t: TcpConnection): net.Socket {
  const s = t.socket
  s.removeAllListeners('data')
  s.pause()
  // the connection's own inactivity timer would close it while TLS traffic flows past it
  s.setTimeout(0)
  s.removeAllListeners('timeout')
  if (t.readBuffer.byteLength > 0) {
    const pending = t.readBuffer.subarray()
    t.readBuffer.consume(pending.byteLength)
    s.unshift(pending)
  }
  return s
}

/**
 * Certificates verified before, by the SHA-256 of their bytes: a peer that
 * connects again presents the same certificate, which is not checked again
 * (node/tls-certificate.ts takes 0.6 ms a certificate, @libp2p/tls 2.8). The
 * TLS handshake itself still proves the peer holds the certificate's key,
 * every time.
 */
export class VerifiedCertificates {
  private readonly peers = new Map<string, PeerId>()
  private readonly max: number
  constructor (max = VERIFIED_MAX) { this.max = max }

  /** The peer a certificate (DER) speaks for; rejects a bad certificate, or one of a peer other than `expected`. */
  async peerOf (der: Uint8Array, expected?: PeerId): Promise<PeerId> {
    const key = createHash('sha256').update(der).digest('base64')
    let peer = this.peers.get(key)
    if (peer === undefined) {
      peer = await certificatePeer(der)
      if (this.peers.size >= this.max) this.peers.delete(this.peers.keys().next().value as string)
      this.peers.set(key, peer)
    }
    if (expected !== undefined && !expected.equals(peer)) throw new UnexpectedPeerError(`the certificate is of ${peer.toString()}, not of ${expected.toString()}`)
    return peer
  }
}

/** Connections this process secured on the socket itself and through @libp2p/tls's duplex (a relayed circuit). */
export const tlsConnections = { socket: 0, duplex: 0 }

export interface NativeTlsInit {
  /** Take @libp2p/tls's duplex path for every connection (bench/transport.ts compares). @default false */
  duplexOnly?: boolean
}

/**
 * Once TLS sits on the TCP socket, the connection closes through TLS. Closing
 * or resetting the TCP socket itself (what @libp2p/tcp's connection does when
 * libp2p aborts it, e.g. a gater refusing the peer after the handshake) can
 * happen from a microtask that runs inside TLS's own read of that socket:
 * the handle closes under OpenSSL's feet and Node 22 segfaults in
 * TLSWrap::ClearOut (test/integration/native-tls.spec.ts has the case). So
 * the TCP socket's destroy (which its reset goes through) destroys the TLS
 * socket first and closes the TCP socket a turn later.
 */
function handOver (t: TcpConnection, socket: TLSSocket): void {
  const raw = t.socket
  const destroyRaw = raw.destroy.bind(raw)
  socket.once('close', () => { destroyRaw() })
  // every way the TCP socket closes (resetAndDestroy too) comes through destroy: TLS goes first, the TCP socket a
  // turn later, outside any read of TLS's and before Node frees TLS's state (a setImmediate after its 'close')
  raw.destroy = (err?: Error) => {
    if (!socket.destroyed) socket.destroy(err)
    setImmediate(() => { if (!raw.destroyed) destroyRaw(err) })
    return raw
  }
  // a graceful close ends TLS (close_notify), not the TCP socket under it
  const c = t as unknown as { sendClose: () => Promise<void> }
  c.sendClose = async () => {
    if (raw.destroyed) return
    const closed = once(raw, 'close')
    socket.destroySoon()
    await closed
  }
}

class NativeTls implements ConnectionEncrypter {
  readonly protocol = '/tls/1.0.0'
  readonly [Symbol.toStringTag] = 'fleetmesh/native-tls'
  readonly [serviceCapabilities] = ['@libp2p/connection-encryption']
  private readonly components: NativeTlsComponents
  private readonly library: ConnectionEncrypter
  private context?: Promise<SecureContext>
  private readonly verified = new VerifiedCertificates()
  private readonly duplexOnly: boolean

  constructor (components: NativeTlsComponents, init: NativeTlsInit) {
    this.components = components
    this.duplexOnly = init.duplexOnly ?? false
    this.library = tls()(components as Parameters<ReturnType<typeof tls>>[0])
    // made now, so a host's first handshake does not wait for it
    void this.secureContext().catch(() => { this.context = undefined })
  }

  async secureInbound (c: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    const t = this.duplexOnly ? undefined : tcpSocketOf(c)
    if (t !== undefined) return await this.secure(c, t, true, options)
    tlsConnections.duplex++
    return await this.library.secureInbound(c, options)
  }

  async secureOutbound (c: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    const t = this.duplexOnly ? undefined : tcpSocketOf(c)
    if (t !== undefined) return await this.secure(c, t, false, options)
    tlsConnections.duplex++
    return await this.library.secureOutbound(c, options)
  }

  /** This host's certificate and key, made once (a TLS 1.3 context: the spec's minimum); made again if making it failed. */
  private async secureContext (): Promise<SecureContext> {
    this.context ??= generateCertificate(this.components.privateKey).then(({ cert, key }) =>
      createSecureContext({ cert, key, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }))
    return await this.context
  }

  private async secure (c: MessageStream, t: TcpConnection, isServer: boolean, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    const raw = detach(t)
    const log = c.log.newScope('native-tls')
    const muxers = this.components.upgrader.getStreamMuxers()
    const offered = options?.skipStreamMuxerNegotiation === true ? [] : [...muxers.keys()]
    let muxer: StreamMuxerFactory | undefined
    let secureContext: SecureContext
    try {
      secureContext = await this.secureContext()
      options?.signal?.throwIfAborted()
    } catch (err) {
      c.abort(err as Error)
      throw err
    }
    const opts = {
      secureContext,
      isServer,
      // the peer's certificate is self-signed: it is checked below against the libp2p key it carries
      rejectUnauthorized: false,
      // early muxer negotiation: the muxers in ALPN, and 'libp2p' for "negotiate it after"
      ALPNProtocols: [...offered, 'libp2p'],
      ALPNCallback: ({ protocols }: { protocols: string[] }) => {
        for (const p of protocols) {
          muxer = muxers.get(p)
          if (muxer !== undefined) return p
        }
        return protocols.includes('libp2p') ? 'libp2p' : undefined
      }
    }
    const socket = isServer ? new TLSSocket(raw, { ...opts, requestCert: true }) : connect({ socket: raw, ...opts })
    handOver(t, socket)
    socket.setTimeout(t.inactivityTimeout ?? INACTIVITY_MS)
    socket.once('timeout', () => { socket.destroy(); c.abort(new TimeoutError('the connection was idle too long')) })
    return await new Promise<SecuredConnection>((resolve, reject) => {
      const fail = (err: Error): void => {
        log.error('TLS on the %s connection failed - %e', c.direction, err)
        socket.destroy()
        c.abort(err)
        reject(err)
      }
      const onAbort = (): void => { fail(options?.signal?.reason ?? new TimeoutError('the TLS handshake timed out')) }
      options?.signal?.addEventListener('abort', onAbort, { once: true })
      const onSecure = (): void => {
        options?.signal?.removeEventListener('abort', onAbort)
        const cert = socket.getPeerCertificate()
        if (cert?.raw === undefined) { fail(new InvalidCryptoExchangeError('the peer sent no certificate')); return }
        this.verified.peerOf(cert.raw, options?.remotePeer).then(remotePeer => {
          if (!isServer && typeof socket.alpnProtocol === 'string' && socket.alpnProtocol !== 'libp2p' && options?.skipStreamMuxerNegotiation !== true) {
            muxer = muxers.get(socket.alpnProtocol)
            if (muxer === undefined) throw new InvalidCryptoExchangeError(`the peer chose the muxer ${socket.alpnProtocol}, which this host does not have`)
          }
          socket.off('error', fail)
          tlsConnections.socket++
          resolve({ remotePeer, connection: coalescingWrites(toMessageStream(c as Parameters<typeof toMessageStream>[0], socket), socket), streamMuxer: muxer })
        }).catch(fail)
      }
      socket.on('error', fail)
      socket.once('secure', onSecure)
    })
  }
}

/** Sends up to this many bytes as one TLS write (see coalescingWrites). */
export const COALESCE_MAX = 64 * 1024

/**
 * A small send leaves as one TLS record in one system call. @libp2p/tls
 * writes each buffer of a send on its own (a yamux frame is its 12-byte
 * header, then its body): the first leaves at once, alone in a record of
 * its own, and the rest a turn of the event loop later, once Node reports
 * the first written; the peer wakes twice for one message. Corked, Node
 * hands them to TLS together, copying them into one buffer, which costs
 * little for small sends. In a larger send (a hand-off: yamux's header, the
 * frame's length and header, then the tensors) the small buffers still
 * leave together, but each large one is written on its own, so Node's TLS
 * never copies it to join it to others (each hand-off's 0.9 MB was copied
 * once more before).
 */
export function coalescingWrites (conn: MessageStream, socket: TLSSocket): MessageStream {
  const c = conn as unknown as { sendData: (data: Uint8ArrayList) => { sentBytes: number, canSendMore: boolean } }
  const send = c.sendData.bind(conn)
  c.sendData = (data) => {
    if (socket.writableCorked > 0) return send(data)
    if (data.byteLength <= COALESCE_MAX) {
      socket.cork()
      try { return send(data) } finally { socket.uncork() }
    }
    let sentBytes = 0
    let canSendMore = true
    let corked = false
    try {
      for (const buf of data) {
        if (buf.byteLength <= COALESCE_MAX && !corked) { socket.cork(); corked = true } else if (buf.byteLength > COALESCE_MAX && corked) { socket.uncork(); corked = false }
        canSendMore = socket.write(buf)
        sentBytes += buf.byteLength
        if (!canSendMore) break
      }
    } finally { if (corked) socket.uncork() }
    return { sentBytes, canSendMore }
  }
  return conn
}

/** libp2p's TLS on the TCP socket itself where there is one (see the top of this file). */
export function nativeTls (init: NativeTlsInit = {}): (components: NativeTlsComponents) => ConnectionEncrypter {
  return (components) => new NativeTls(components, init)
}
