/**
 * Transport benchmark: bytes per second over one stream of a fleetmesh
 * connection (TCP; TLS 1.3 on the socket (node/native-tls.ts), the same TLS
 * through @libp2p/tls's duplex, or Noise; yamux with the windows host.ts sets)
 * against a raw Node TCP socket, on loopback, 256 KiB writes, over kept
 * connections (each link's first transfer, cold, is reported apart): first with both
 * ends in this process (both ends' work on one thread), then between two
 * processes (bench/transport-pair.ts: each end on a core of its own, as two
 * vehicles are). The modes take turns, `--rounds` times, so a busy machine
 * slows them alike; the figure is the ratio to raw TCP. Then round trips
 * between two processes: a 100-byte message's, and a 0.9 MB hand-off's (the
 * CPU it costs each side), back to back and after 20 ms idle each; last,
 * connection set-up.
 *
 *   node bench/transport.ts [--mb 256] [--rounds 3]
 */
import type net from 'node:net'
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { libp2pLink, libp2pSink, linkThroughput, pairRoundTrips, pairThroughput, rawLink, rawSink } from './transport-pair.ts'
import type { Link } from './transport-pair.ts'

const { values } = parseArgs({ options: { mb: { type: 'string', default: '256' }, rounds: { type: 'string', default: '3' } } })
const TOTAL = Number(values.mb) * 1024 * 1024
type Encryption = 'tls' | 'tls-duplex' | 'noise'

/** A raw TCP socket to a server in this process. */
async function localRaw (): Promise<Link> {
  const server = await rawSink(TOTAL)
  const link = await rawLink((server.address() as net.AddressInfo).port, TOTAL)
  return { transfer: link.transfer, close: async () => { await link.close(); server.close() } }
}

/** A stream between two fleetmesh hosts in this process speaking `encryption`. */
async function localLibp2p (encryption: Encryption): Promise<Link> {
  const sink = await libp2pSink(encryption, TOTAL)
  const link = await libp2pLink(encryption, sink.getMultiaddrs()[0].toString(), TOTAL)
  return { transfer: link.transfer, close: async () => { await link.close(); await sink.stop() } }
}

/** Milliseconds per new connection (dial, handshake, muxer), `n` in a row, between two fleetmesh hosts speaking `encryption`. */
async function handshakeMs (encryption: Encryption, n = 40): Promise<number> {
  const opts = { listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', encryption: [encryption], privateAddresses: true }
  const [a, b]: Host[] = [await createHost(opts), await createHost(opts)]
  try {
    const addr = multiaddr(b.getMultiaddrs()[0].toString())
    const t0 = performance.now()
    for (let i = 0; i < n; i++) {
      const conn = await a.dial(addr)
      await conn.close()
    }
    return (performance.now() - t0) / n
  } finally {
    await Promise.all([a.stop(), b.stop()])
  }
}

/** CPU milliseconds (both ends) per connection between peers that never met: `n` new hosts each dial one listener. */
async function firstContactCpuMs (encryption: Encryption, n = 20): Promise<number> {
  const opts = { listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', encryption: [encryption], privateAddresses: true }
  const listener = await createHost(opts)
  const dialers = await Promise.all(Array.from({ length: n }, async () => await createHost({ ...opts, listen: [] })))
  try {
    // each host makes its TLS certificate as it starts: let that finish first
    await new Promise(resolve => setTimeout(resolve, 500))
    const addr = multiaddr(listener.getMultiaddrs()[0].toString())
    const c0 = process.cpuUsage()
    for (const d of dialers) await (await d.dial(addr)).close()
    const c = process.cpuUsage(c0)
    return (c.user + c.system) / 1000 / n
  } finally {
    await Promise.all([listener, ...dialers].map(async h => { await h.stop() }))
  }
}

const modes: Array<[string, () => Promise<Link>]> = [
  ['raw TCP', localRaw],
  ['TCP + TLS 1.3 + yamux', async () => await localLibp2p('tls')],
  ['TLS via a JS duplex', async () => await localLibp2p('tls-duplex')],
  ['TCP + Noise + yamux', async () => await localLibp2p('noise')]
]
const one = await linkThroughput(modes, Number(values.rounds))
const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
const handshakes: Record<Encryption, number[]> = { tls: [], 'tls-duplex': [], noise: [] }
const firstContact: Record<Encryption, number[]> = { tls: [], 'tls-duplex': [], noise: [] }
for (let r = 0; r < Number(values.rounds); r++) {
  for (const e of ['tls', 'tls-duplex', 'noise'] as const) {
    handshakes[e].push(await handshakeMs(e))
    firstContact[e].push(await firstContactCpuMs(e))
  }
}
/** Per mode: the median MB/s of the kept link, its ratio to raw TCP's median, every round, and the link's first (cold) transfer. */
const table = (t: { cold: Record<string, number>, runs: Record<string, number[]> }): Array<{ mode: string, mbPerS: number, ratioToRaw: number, runs: number[], coldMbPerS: number, coldRatioToRaw: number }> => {
  const raw = median(t.runs['raw TCP'])
  return Object.entries(t.runs).map(([mode, xs]) => ({ mode, mbPerS: Math.round(median(xs)), ratioToRaw: Math.round(median(xs) / raw * 1000) / 1000, runs: xs.map(Math.round), coldMbPerS: t.cold[mode], coldRatioToRaw: Math.round(t.cold[mode] / t.cold['raw TCP'] * 1000) / 1000 }))
}
const print = (rs: ReturnType<typeof table>): void => {
  for (const r of rs) console.log(`${r.mode.padEnd(24)} ${String(r.mbPerS).padStart(6)} MB/s  ${r.ratioToRaw.toFixed(3)}x raw  (${r.runs.join(', ')}); cold ${r.coldMbPerS} MB/s, ${r.coldRatioToRaw.toFixed(3)}x`)
}
const rows = table(one)
console.log(`one kept stream on loopback, ${values.mb} MB per transfer in 256 KiB writes, both ends in one process: median of ${values.rounds} transfers taken in turn, after each link's first (cold) one`)
print(rows)
const pair = table(await pairThroughput(Math.max(3, Number(values.rounds)), TOTAL))
console.log('the same between two processes (the receiver in a child process)')
print(pair)
const roundTrips = await pairRoundTrips(3000)
console.log('a 100-byte message answered by one byte, between two processes, one kept connection and stream (median ms; CPU ms per round trip, sender / receiver)')
for (const r of roundTrips) console.log(`${r.mode.padEnd(24)} ${r.ms.toFixed(3).padStart(7)} ms  cpu ${r.senderCpuMs.toFixed(3)} / ${r.receiverCpuMs.toFixed(3)} ms`)
// a hand-off between the two vehicles of `npm run bench` (pp-ocrv4-rec cut in two: 230,400 float32), back to back and as a sequential job's hops come
const HAND_OFF = 921_600
const handOffs = await pairRoundTrips(300, HAND_OFF)
const idleHandOffs = await pairRoundTrips(100, HAND_OFF, 20)
console.log(`a ${HAND_OFF.toLocaleString('en')}-byte hand-off answered by one byte, the same way: back to back, then each after 20 ms idle (median ms; CPU ms, sender / receiver)`)
handOffs.forEach((r, i) => {
  const q = idleHandOffs[i]
  console.log(`${r.mode.padEnd(24)} ${r.ms.toFixed(3).padStart(7)} ms  cpu ${r.senderCpuMs.toFixed(3)} / ${r.receiverCpuMs.toFixed(3)} ms   after idle ${q.ms.toFixed(3).padStart(7)} ms  cpu ${q.senderCpuMs.toFixed(3)} / ${q.receiverCpuMs.toFixed(3)} ms`)
})
const medians = (m: Record<Encryption, number[]>): Record<string, number> => Object.fromEntries(Object.entries(m).map(([e, xs]) => [e, Math.round(median(xs) * 100) / 100]))
const connectMs = medians(handshakes)
const firstContactCpu = medians(firstContact)
console.log(`a new connection to a peer met before (dial, handshake, muxer; wall ms): TLS 1.3 ${connectMs.tls} (via a JS duplex ${connectMs['tls-duplex']}), Noise ${connectMs.noise}`)
console.log(`a connection between peers that never met (CPU ms, both ends): TLS 1.3 ${firstContactCpu.tls} (via a JS duplex ${firstContactCpu['tls-duplex']}), Noise ${firstContactCpu.noise}`)
console.log(JSON.stringify({ bench: 'transport', mb: Number(values.mb), rows, pair, roundTrips, handOffs, idleHandOffs, connectMs, firstContactCpu }))
process.exit(0)
