/** An echo protocol for transport tests: one length-prefixed message, sent back as it came. */
import { randomBytes } from 'node:crypto'
import { lpStream } from '@libp2p/utils'
import type { Libp2p, Stream } from '@libp2p/interface'

export const ECHO = '/fleetmesh-test/echo/1.0.0'

/** A handler for ECHO that takes messages of up to `max` bytes. */
export function echoHandler (max: number): (stream: Stream) => Promise<void> {
  return async (stream) => {
    const lp = lpStream(stream, { maxDataLength: max, maxBufferSize: max + 1024 })
    await lp.write(await lp.read())
    await stream.close()
  }
}

/** Sends `bytes` random bytes from `a` to `b` over a new ECHO stream and reads them back. */
export async function roundTrip (a: Libp2p, b: Libp2p, bytes: number): Promise<{ ok: boolean, stream: Stream }> {
  const signal = (): AbortSignal => AbortSignal.timeout(10_000)
  const stream = await a.dialProtocol(b.getMultiaddrs()[0], ECHO, { signal: signal() })
  const lp = lpStream(stream, { maxDataLength: bytes, maxBufferSize: bytes + 1024 })
  const data = new Uint8Array(randomBytes(bytes))
  await lp.write(data, { signal: signal() })
  const back = (await lp.read({ signal: signal() })).subarray()
  await stream.close()
  return { ok: Buffer.compare(back, data) === 0, stream }
}
