/**
 * The check of a libp2p TLS certificate (libp2p/specs tls.md) with Node's
 * own X.509: the certificate is self-signed by its key, within its validity,
 * and carries the libp2p public key extension, whose signature by the peer's
 * libp2p key over "libp2p-tls-handshake:" and the certificate's public key
 * (SubjectPublicKeyInfo, DER) binds that key to the peer. @libp2p/tls checks
 * the same in JavaScript (@peculiar/x509, asn1js): about 4 ms a certificate
 * here, most of a TLS handshake between peers that never met. The one part
 * Node does not parse, the extension, is read with a bounded DER reader.
 */
import { X509Certificate } from 'node:crypto'
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { InvalidCryptoExchangeError } from '@libp2p/interface'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPublicKey } from '@libp2p/peer-id'

const SIGNATURE_PREFIX = Buffer.from('libp2p-tls-handshake:')
/** 1.3.6.1.4.1.53594.1.1, the libp2p public key extension, as the content of a DER OBJECT IDENTIFIER. */
const EXTENSION_OID = Buffer.from([0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xa2, 0x5a, 0x01, 0x01])
const SEQUENCE = 0x30
const OCTET_STRING = 0x04
const OBJECT_IDENTIFIER = 0x06
const BOOLEAN = 0x01
/** [3] EXPLICIT, where a TBSCertificate keeps its extensions. */
const EXTENSIONS = 0xa3

function invalid (why: string): InvalidCryptoExchangeError {
  return new InvalidCryptoExchangeError(`the peer's certificate ${why}`)
}

/** One DER element: its tag and where its content starts and ends. */
export interface Element { tag: number, start: number, end: number }

/** The element at `at`, which must end by `limit` (definite lengths, one-byte tags: all X.509 needs). */
export function element (b: Uint8Array, at: number, limit: number): Element {
  if (at + 2 > limit) throw invalid('is truncated')
  const tag = b[at]
  if ((tag & 0x1f) === 0x1f) throw invalid('has a multi-byte DER tag')
  let length = b[at + 1]
  let start = at + 2
  if ((length & 0x80) !== 0) {
    const n = length & 0x7f
    if (n === 0 || n > 3 || start + n > limit) throw invalid('has a bad DER length')
    length = 0
    for (let i = 0; i < n; i++) length = length * 256 + b[start++]
  }
  if (start + length > limit) throw invalid('has an element longer than its container')
  return { tag, start, end: start + length }
}

/** The elements inside `e`, which must be `tag`. */
export function children (b: Uint8Array, e: Element, tag: number, what: string): Element[] {
  if (e.tag !== tag) throw invalid(`has no ${what} where one belongs`)
  const out: Element[] = []
  for (let at = e.start; at < e.end; at = out[out.length - 1].end) out.push(element(b, at, e.end))
  return out
}

/** The libp2p extension's two parts: the peer's public key (protobuf) and its signature. */
export function libp2pExtension (der: Uint8Array): { key: Uint8Array, signature: Uint8Array } {
  const cert = children(der, element(der, 0, der.byteLength), SEQUENCE, 'certificate')
  const tbs = children(der, cert[0], SEQUENCE, 'TBSCertificate')
  const holder = tbs.find(e => e.tag === EXTENSIONS)
  if (holder === undefined) throw invalid('has no extensions (the libp2p public key extension is required)')
  const [list] = children(der, holder, EXTENSIONS, 'extensions')
  let found: Element | undefined
  for (const ext of children(der, list, SEQUENCE, 'extension list')) {
    const parts = children(der, ext, SEQUENCE, 'extension')
    if (parts.length < 2 || parts[0].tag !== OBJECT_IDENTIFIER) throw invalid('has a malformed extension')
    if (!EXTENSION_OID.equals(der.subarray(parts[0].start, parts[0].end))) continue
    if (found !== undefined) throw invalid('has the libp2p public key extension twice')
    const value = parts[parts.length - 1]
    if (value.tag !== OCTET_STRING || (parts.length === 3 && parts[1].tag !== BOOLEAN) || parts.length > 3) throw invalid('has a malformed libp2p public key extension')
    found = value
  }
  if (found === undefined) throw invalid('lacks the libp2p public key extension')
  const inner = element(der, found.start, found.end)
  if (inner.end !== found.end) throw invalid('has bytes after its libp2p public key extension')
  const fields = children(der, inner, SEQUENCE, 'libp2p key sequence')
  if (fields.length !== 2 || fields.some(f => f.tag !== OCTET_STRING)) throw invalid('has a libp2p public key extension that is not two octet strings')
  return { key: der.slice(fields[0].start, fields[0].end), signature: der.slice(fields[1].start, fields[1].end) }
}

/** The peer a libp2p TLS certificate (DER) speaks for; throws InvalidCryptoExchangeError naming what is wrong. */
export async function certificatePeer (der: Uint8Array, now = Date.now()): Promise<PeerId> {
  let x: X509Certificate
  try { x = new X509Certificate(der) } catch { throw invalid('is not an X.509 certificate') }
  if (Date.parse(x.validFrom) > now) throw invalid('is not valid yet')
  if (Date.parse(x.validTo) < now) throw invalid('has expired')
  if (!x.checkIssued(x) || !x.verify(x.publicKey)) throw invalid('is not self-signed by its own key')
  const { key, signature } = libp2pExtension(der)
  let peerKey
  try { peerKey = publicKeyFromProtobuf(key) } catch (err) { throw invalid(`carries a libp2p key that cannot be read (${(err as Error).message})`) }
  const spki = x.publicKey.export({ type: 'spki', format: 'der' })
  if (!await peerKey.verify(Buffer.concat([SIGNATURE_PREFIX, spki]), signature)) throw invalid('is not signed by the libp2p key it carries')
  return peerIdFromPublicKey(peerKey)
}
