/**
 * Transport benchmark: bytes per second over one stream of a fleetmesh
 * connection (TCP; TLS 1.3 on the socket (node/native-tls.ts), the same TLS
 * through @libp2p/tls's duplex, or Noise; yamux with the windows host.ts sets)
 * against a raw Node TCP socket, on loopback, 256 KiB writes: first with both
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
import net from 'node:net'
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { PROTOCOL, pairRoundTrips, pairThroughput, timedTransfer } from './transport-pair.ts'

const { values } = parseArgs({ options: { mb: { type: 'string', default: '256' }, rounds: { type: 'string', default: '3' } } })
const TOTAL = Number(values.mb) * 1024 * 1024
type Encryption = 'tls' | 'tls-duplex' | 'noise'

/** MB/s through a raw TCP socket. */
async function raw (): Promise<number> {
  let got = 0
  let done!: () => void
  const finished = new Promise<void>(resolve => { done = resolve })
  const server = net.createServer(s => { s.on('data', (d: Buffer) => { got += d.byteLength; if (got >= TOTAL) done() }) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const sock = net.connect(port, '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  const mbPerS = await timedTransfer(c => sock.write(c), async () => await new Promise(resolve => sock.once('drain', resolve)), finished, TOTAL)
  sock.destroy()
  server.close()
  return mbPerS
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

/** MB/s over one libp2p stream between two fleetmesh hosts speaking `encryption`. */
async function libp2p (encryption: Encryption): Promise<number> {
  const opts = { listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', encryption: [encryption], privateAddresses: true }
  const [a, b]: Host[] = [await createHost(opts), await createHost(opts)]
  try {
    let got = 0
    let done!: () => void
    const finished = new Promise<void>(resolve => { done = resolve })
    await b.handle(PROTOCOL, async (stream) => {
      for await (const d of stream) { got += d.byteLength; if (got >= TOTAL) done() }
    })
    const stream = await a.dialProtocol(multiaddr(b.getMultiaddrs()[0].toString()), PROTOCOL)
    const mbPerS = await timedTransfer(c => stream.send(c), async () => await stream.onDrain(), finished, TOTAL)
    await stream.close()
    return mbPerS
  } finally {
    await Promise.all([a.stop(), b.stop()])
  }
}

const modes: Array<[string, () => Promise<number>]> = [
  ['raw TCP', raw],
  ['TCP + TLS 1.3 + yamux', async () => await libp2p('tls')],
  ['TLS via a JS duplex', async () => await libp2p('tls-duplex')],
  ['TCP + Noise + yamux', async () => await libp2p('noise')]
]
const runs = new Map<string, number[]>(modes.map(([m]) => [m, []]))
for (let r = 0; r < Number(values.rounds); r++) {
  for (const [m, fn] of modes) runs.get(m)!.push(await fn())
}
const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
const handshakes: Record<Encryption, number[]> = { tls: [], 'tls-duplex': [], noise: [] }
const firstContact: Record<Encryption, number[]> = { tls: [], 'tls-duplex': [], noise: [] }
for (let r = 0; r < Number(values.rounds); r++) {
  for (const e of ['tls', 'tls-duplex', 'noise'] as const) {
    handshakes[e].push(await handshakeMs(e))
    firstContact[e].push(await firstContactCpuMs(e))
  }
}
/** Per mode: the median MB/s, its ratio to raw TCP's median, and every round. */
const table = (byMode: Array<[string, number[]]>): Array<{ mode: string, mbPerS: number, ratioToRaw: number, runs: number[] }> => {
  const raw = median(byMode.find(([m]) => m === 'raw TCP')![1])
  return byMode.map(([mode, xs]) => ({ mode, mbPerS: Math.round(median(xs)), ratioToRaw: Math.round(median(xs) / raw * 1000) / 1000, runs: xs.map(Math.round) }))
}
const rows = table([...runs.entries()])
console.log(`one stream on loopback, ${values.mb} MB in 256 KiB writes, both ends in one process, median of ${values.rounds} rounds taken in turn`)
for (const r of rows) console.log(`${r.mode.padEnd(24)} ${String(r.mbPerS).padStart(6)} MB/s  ${r.ratioToRaw.toFixed(3)}x raw  (${r.runs.join(', ')})`)
const pairRuns = await pairThroughput(Math.max(3, Number(values.rounds)), TOTAL)
const pair = table(Object.entries(pairRuns))
console.log(`the same between two processes (the receiver in a child process), median of ${pairRuns['raw TCP'].length} rounds`)
for (const r of pair) console.log(`${r.mode.padEnd(24)} ${String(r.mbPerS).padStart(6)} MB/s  ${r.ratioToRaw.toFixed(3)}x raw  (${r.runs.join(', ')})`)
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
