/**
 * One connection's throughput between two processes (bench/transport.ts's
 * second table): the sender in the calling process, the receiver in a child
 * (this file run with `--receiver`), as two vehicles are. Each end then has a
 * core of its own, where bench/transport.ts's first table puts both ends'
 * work on one thread. Each mode (raw TCP, TLS 1.3 on the socket, Noise) gets
 * one connection and stream, kept as a vehicle keeps them: its first
 * transfer is timed apart (cold: a new connection, code not yet optimised,
 * socket buffers not yet grown), then the kept links take turns `rounds`
 * times. Also round trips (pairRoundTrips): a small message's, and a
 * hand-off's, with the CPU each side spends on one.
 */
import { fork } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { drained } from '../node/util/drain.ts'

const CHUNK = 256 * 1024
export const PROTOCOL = '/fleetmesh-bench/sink/1.0.0'
const PAIR_MODES = ['raw TCP', 'TCP + TLS 1.3 + yamux', 'TCP + Noise + yamux'] as const
type PairMode = typeof PAIR_MODES[number]
const ENCRYPTION = { 'TCP + TLS 1.3 + yamux': 'tls', 'TCP + Noise + yamux': 'noise' } as const

interface Receiver { port: number, addrs: Record<string, string> }

/** Counts bytes arriving and calls `answer` after every `total` of them. */
export function answerAfter (total: number, answer: () => unknown): (n: number) => void {
  let got = 0
  return (n) => { got += n; if (got >= total) { got -= total; answer() } }
}

/** A TCP server on loopback whose sockets answer one byte after every `total` bytes. */
export async function rawSink (total: number): Promise<net.Server> {
  const server = net.createServer(s => {
    const count = answerAfter(total, () => s.write(new Uint8Array(1)))
    s.on('data', (d: Buffer) => { count(d.byteLength) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return server
}

/** A fleetmesh host on loopback speaking `encryption` whose streams answer one byte after every `total` bytes. */
export async function libp2pSink (encryption: 'tls' | 'tls-duplex' | 'noise', total: number): Promise<Host> {
  const host = await createHost({ listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', encryption: [encryption], privateAddresses: true })
  await host.handle(PROTOCOL, async (stream) => {
    const count = answerAfter(total, () => stream.send(new Uint8Array(1)))
    for await (const d of stream) count(d.byteLength)
  })
  return host
}

/** The receiving side: sinks that answer one byte after each `total` bytes. */
async function receive (total: number): Promise<void> {
  const server = await rawSink(total)
  const addrs: Record<string, string> = {}
  for (const [mode, encryption] of Object.entries(ENCRYPTION) as Array<[PairMode, 'tls' | 'noise']>) addrs[mode] = (await libp2pSink(encryption, total)).getMultiaddrs()[0].toString()
  // the parent asks for this process's CPU time around its round trips
  process.on('message', (m) => { if (m === 'cpu') process.send!(process.cpuUsage()) })
  process.send!({ port: (server.address() as net.AddressInfo).port, addrs } satisfies Receiver)
  // the parent ends this process when it is done (or dies: the IPC channel closes)
  process.on('disconnect', () => process.exit(0))
}

const chunk = new Uint8Array(CHUNK).fill(7)

/**
 * MB/s of `total` bytes written in 256 KiB chunks (waiting for `room`
 * whenever `write` says to) until `arrived` settles: the receiver has them all.
 */
export async function timedTransfer (write: (c: Uint8Array) => boolean, room: () => Promise<unknown>, arrived: Promise<unknown>, total: number): Promise<number> {
  const t0 = performance.now()
  for (let sent = 0; sent < total; sent += CHUNK) {
    if (!write(chunk)) await room()
  }
  await arrived
  return total / 1e6 / ((performance.now() - t0) / 1000)
}

/** A kept connection (and stream) that moves `total` bytes per transfer, answered by one byte: MB/s per transfer. */
export interface Link { transfer: () => Promise<number>, close: () => Promise<void> }

/** A raw TCP socket to `port`. */
export async function rawLink (port: number, total: number): Promise<Link> {
  const sock = net.connect(port, '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  return {
    transfer: async () => await timedTransfer(c => sock.write(c), async () => await new Promise(resolve => sock.once('drain', resolve)), new Promise(resolve => sock.once('data', resolve)), total),
    close: async () => { sock.destroy() }
  }
}

/** A stream of a fleetmesh connection, from a host of its own speaking `encryption`, to `addr`. */
export async function libp2pLink (encryption: 'tls' | 'tls-duplex' | 'noise', addr: string, total: number): Promise<Link> {
  const host = await createHost({ listen: [], fleet: 'bench', encryption: [encryption], privateAddresses: true })
  const stream = await host.dialProtocol(multiaddr(addr), PROTOCOL)
  const answers = stream[Symbol.asyncIterator]()
  return {
    transfer: async () => await timedTransfer(c => stream.send(c), async () => { await drained(stream) }, answers.next(), total),
    close: async () => { await stream.close(); await host.stop() }
  }
}

/** MB/s per mode over links `open` makes: each link's first transfer (cold), then `rounds` transfers of the kept links in turn; every link closed after. */
export async function linkThroughput<M extends string> (open: Array<[M, () => Promise<Link>]>, rounds: number): Promise<{ cold: Record<M, number>, runs: Record<M, number[]> }> {
  const links: Array<[M, Link]> = []
  try {
    for (const [m, make] of open) links.push([m, await make()])
    const cold = {} as Record<M, number>
    const runs = {} as Record<M, number[]>
    for (const [m, link] of links) { cold[m] = Math.round(await link.transfer()); runs[m] = [] }
    for (let r = 0; r < rounds; r++) {
      for (const [m, link] of links) runs[m].push(await link.transfer())
    }
    return { cold, runs }
  } finally { await Promise.all(links.map(async ([, l]) => { await l.close() })) }
}

/** Runs `fn` with a receiving child process that answers a byte after every `total` bytes (and tells its CPU time in ms), and ends the child. */
async function withReceiver<T> (total: number, fn: (receiver: Receiver, cpuMs: () => Promise<number>) => Promise<T>): Promise<T> {
  const child = fork(fileURLToPath(import.meta.url), ['--receiver', String(total)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  try {
    const receiver = await new Promise<Receiver>((resolve, reject) => {
      child.once('message', m => { resolve(m as Receiver) })
      child.once('exit', code => { reject(new Error(`the receiving process exited (${code})`)) })
    })
    const cpuMs = async (): Promise<number> => await new Promise<number>(resolve => {
      child.once('message', m => { const u = m as NodeJS.CpuUsage; resolve((u.user + u.system) / 1000) })
      child.send('cpu')
    })
    return await fn(receiver, cpuMs)
  } finally { child.kill() }
}

/** MB/s per mode, sender here and receiver in a child process: each mode's cold transfer and its kept link's rounds. */
export async function pairThroughput (rounds: number, total: number): Promise<{ cold: Record<PairMode, number>, runs: Record<PairMode, number[]> }> {
  return await withReceiver(total, async (receiver) => await linkThroughput(PAIR_MODES.map(m => [m, async () => m === 'raw TCP' ? await rawLink(receiver.port, total) : await libp2pLink(ENCRYPTION[m], receiver.addrs[m], total)]), rounds))
}

/** A message's round trip: median wall ms and each side's CPU ms per round trip. */
export interface RoundTrip { mode: PairMode, ms: number, senderCpuMs: number, receiverCpuMs: number }

/**
 * `n` round trips of a `bytes`-byte message answered by one byte, per mode,
 * one connection (and for libp2p one kept stream) each, between two processes:
 * what a request and its answer cost beyond their bytes (100 bytes), or what
 * a hand-off costs each side (0.9 MB). With `idleMs`, each round trip follows
 * that long a pause, as a sequential job's hops do.
 */
export async function pairRoundTrips (n: number, bytes = 100, idleMs = 0): Promise<RoundTrip[]> {
  return await withReceiver(bytes, async (receiver, receiverCpuMs) => {
    const message = new Uint8Array(bytes)
    const out: RoundTrip[] = []
    for (const mode of PAIR_MODES) {
      let exchange: () => Promise<unknown>
      let done: () => Promise<void>
      if (mode === 'raw TCP') {
        const sock = net.connect(receiver.port, '127.0.0.1')
        sock.setNoDelay(true)
        await new Promise(resolve => sock.once('connect', resolve))
        exchange = async () => { const answered = new Promise(resolve => sock.once('data', resolve)); sock.write(message); await answered }
        done = async () => { sock.destroy() }
      } else {
        const host = await createHost({ listen: [], fleet: 'bench', encryption: [ENCRYPTION[mode]], privateAddresses: true })
        const stream = await host.dialProtocol(multiaddr(receiver.addrs[mode]), PROTOCOL)
        const answers = stream[Symbol.asyncIterator]()
        exchange = async () => { stream.send(message); await answers.next() }
        done = async () => { await stream.close(); await host.stop() }
      }
      try {
        for (let i = 0; i < Math.min(500, n); i++) await exchange()
        const ms: number[] = []
        const [cpu0, remote0] = [process.cpuUsage(), await receiverCpuMs()]
        for (let i = 0; i < n; i++) {
          if (idleMs > 0) await new Promise(resolve => setTimeout(resolve, idleMs))
          const t0 = performance.now()
          await exchange()
          ms.push(performance.now() - t0)
        }
        const [cpu, remote] = [process.cpuUsage(cpu0), await receiverCpuMs() - remote0]
        ms.sort((a, b) => a - b)
        out.push({ mode, ms: Math.round(ms[n >> 1] * 1000) / 1000, senderCpuMs: Math.round((cpu.user + cpu.system) / n) / 1000, receiverCpuMs: Math.round(remote / n * 1000) / 1000 })
      } finally { await done() }
    }
    return out
  })
}

if (process.argv[2] === '--receiver') await receive(Number(process.argv[3]))
