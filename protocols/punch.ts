/**
 * `/fleetmesh/punch/1.0.0` (schema: protocols/punch.proto): TCP hole punching
 * between two members whose only connection is relayed. The dialing side of
 * the relayed connection sends CONNECT with the public address it will dial
 * from; the other side answers CONNECT with its own; the first sends SYNC,
 * waits half the round trip it measured and dials, while the other dials as
 * soon as SYNC arrives. Addresses are plain `/ip4|ip6/<ip>/tcp/<port>`:
 * anything else, more than MAX_PUNCH_ADDRS of them, or a message over
 * MAX_PUNCH_MESSAGE_BYTES is refused with a typed error.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'
import { decodeMessage, encodeMessage, list } from './codec.ts'
import { MalformedFrameError } from './errors.ts'
import { HolePunchSchema } from './gen/punch_pb.ts'
import { MAX_PUNCH_ADDRS, MAX_PUNCH_MESSAGE_BYTES } from './limits.ts'

export type PunchMessage = { type: 'connect', addrs: Multiaddr[] } | { type: 'sync' } | { type: 'unknown' }

export function encodePunchMessage (m: Exclude<PunchMessage, { type: 'unknown' }>): Uint8Array {
  return encodeMessage(HolePunchSchema, {
    kind: m.type === 'connect' ? { case: 'connect', value: { addrs: m.addrs.map(a => a.bytes) } } : { case: 'sync', value: {} }
  })
}

/** Decodes and checks one message; errors name the field. */
export function decodePunchMessage (bytes: Uint8Array): PunchMessage {
  const m = decodeMessage(HolePunchSchema, bytes, 'punch message', MAX_PUNCH_MESSAGE_BYTES)
  switch (m.kind.case) {
    case 'connect': {
      const raw = list(m.kind.value.addrs, 'punch message.connect.addrs', MAX_PUNCH_ADDRS)
      if (raw.length === 0) throw new MalformedFrameError('punch message.connect.addrs', 'must not be empty')
      return { type: 'connect', addrs: raw.map((b, i) => tcpAddress(b, `punch message.connect.addrs[${i}]`)) }
    }
    case 'sync': return { type: 'sync' }
    default: return { type: 'unknown' }
  }
}

/** `/ip4|ip6/<ip>/tcp/<port>` and nothing more (no DNS name, no peer id, no relay). */
function tcpAddress (bytes: Uint8Array, field: string): Multiaddr {
  let ma: Multiaddr
  try { ma = multiaddr(bytes) } catch { throw new MalformedFrameError(field, 'is not a multiaddr') }
  const c = ma.getComponents()
  if (c.length !== 2 || (c[0].name !== 'ip4' && c[0].name !== 'ip6') || c[1].name !== 'tcp' || Number(c[1].value) === 0) {
    throw new MalformedFrameError(field, `must be /ip4|ip6/<ip>/tcp/<port>, not ${ma.toString()}`)
  }
  return ma
}
