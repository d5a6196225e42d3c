import assert from 'node:assert/strict'
import { generateKeyPairSync, sign } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateCertificate, verifyPeerCertificate } from '@libp2p/tls/utils'
import { certificatePeer, children, element, libp2pExtension } from '../../node/tls-certificate.ts'

const der = (pem: string): Uint8Array => new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))

/** A DER element of `tag` around `content`. */
function tlv (tag: number, content: Uint8Array): Uint8Array {
  const n = content.byteLength
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]
  return Buffer.concat([Buffer.from([tag, ...len]), content])
}

/**
 * A certificate that is validly self-signed by a fresh P-256 key but carries
 * the libp2p extension of `victim` (signed over the victim's own certificate
 * key): what a peer stealing another's identity would present.
 */
function withStolenExtension (victim: Uint8Array): Uint8Array {
  const cert = children(victim, element(victim, 0, victim.byteLength), 0x30, 'certificate')
  const tbs = children(victim, cert[0], 0x30, 'TBSCertificate')
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const spki = publicKey.export({ type: 'spki', format: 'der' })
  // the TBSCertificate's 7th element is its SubjectPublicKeyInfo ([0] version first)
  const parts = tbs.map((e, i) => i === 6 ? spki : victim.subarray(e.start - headerLength(victim, e), e.end))
  const newTbs = tlv(0x30, Buffer.concat(parts))
  const sigAlg = victim.subarray(cert[1].start - headerLength(victim, cert[1]), cert[1].end)
  const signature = tlv(0x03, Buffer.concat([Buffer.from([0]), sign('sha256', newTbs, privateKey)]))
  return tlv(0x30, Buffer.concat([newTbs, sigAlg, signature]))
}

/** How many bytes of tag and length come before an element's content. */
function headerLength (b: Uint8Array, e: { start: number, end: number }): number {
  for (let h = 2; h < 6; h++) if (element(b, e.start - h, e.end).end === e.end) return h
  throw new Error('no header found')
}

describe('libp2p TLS certificates checked with Node\'s X.509 (node/tls-certificate.ts)', () => {
  it('names the same peer as @libp2p/tls for Ed25519, secp256k1 and RSA keys', async () => {
    for (const type of ['Ed25519', 'secp256k1', 'RSA'] as const) {
      const key = type === 'RSA' ? await generateKeyPair('RSA', 2048) : await generateKeyPair(type)
      const c = der((await generateCertificate(key)).cert)
      assert.equal((await certificatePeer(c)).toString(), peerIdFromPrivateKey(key).toString(), type)
      assert.equal((await verifyPeerCertificate(c)).toString(), peerIdFromPrivateKey(key).toString(), `${type}, the library agrees`)
    }
  })

  it('accepts nothing @libp2p/tls rejects, one flipped bit at each byte of a certificate', async () => {
    const c = der((await generateCertificate(await generateKeyPair('Ed25519'))).cert)
    let rejected = 0
    for (let i = 0; i < c.byteLength; i++) {
      const m = c.slice()
      m[i] ^= 1 << (i % 8)
      const ours = await certificatePeer(m).then(p => p.toString(), () => undefined)
      const theirs = await verifyPeerCertificate(m).then(p => p.toString(), () => undefined)
      if (ours === undefined) { rejected++; continue }
      assert.equal(ours, theirs, `byte ${i}: accepted here, so the library must accept it for the same peer`)
    }
    assert.ok(rejected > c.byteLength * 0.9, `${rejected} of ${c.byteLength} flips rejected`)
  })

  it('rejects a self-signed certificate carrying another peer\'s extension', async () => {
    const victim = await generateKeyPair('Ed25519')
    const stolen = withStolenExtension(der((await generateCertificate(victim)).cert))
    assert.deepEqual(libp2pExtension(stolen).key.byteLength > 0, true, 'the forged certificate parses')
    await assert.rejects(certificatePeer(stolen), /not signed by the libp2p key it carries/)
    await assert.rejects(verifyPeerCertificate(stolen), 'the library rejects it too')
  })

  it('names what is wrong with a certificate that is not one, or lacks the extension', async () => {
    await assert.rejects(certificatePeer(new Uint8Array(40)), /is not an X.509 certificate/)
    const c = der((await generateCertificate(await generateKeyPair('Ed25519'))).cert)
    assert.throws(() => libp2pExtension(c.subarray(0, c.byteLength - 100)), /longer than its container/)
    const noExtension = Buffer.from(c)
    noExtension.set([0x2a], noExtension.indexOf(Buffer.from([0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xa2, 0x5a])))
    assert.throws(() => libp2pExtension(noExtension), /lacks the libp2p public key extension/)
  })
})
