/**
 * One connection's throughput between two processes (bench/transport.ts's
 * second table): the sender in the calling process, the receiver in a child
 * (this file run with `--receiver`), as two vehicles are. Each end then has a
 * core of its own, where bench/transport.ts's first table puts both ends'
 * work on one thread. Raw TCP, TLS 1.3 on the socket and Noise take turns,
 * `rounds` times; a fresh sending host per round, so each round makes its
 * own connection. Also round trips (pairRoundTrips): a small message's, and
 * a hand-off's, with the CPU each side spends on one.
 */
import { fork } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../node/host.ts'

const CHUNK = 256 * 1024
export const PROTOCOL = '/fleetmesh-bench/sink/1.0.0'
const PAIR_MODES = ['raw TCP', 'TCP + TLS 1.3 + yamux', 'TCP + Noise + yamux'] as const
type PairMode = typeof PAIR_MODES[number]
const ENCRYPTION = { 'TCP + TLS 1.3 + yamux': 'tls', 'TCP + Noise + yamux': 'noise' } as const

interface Receiver { port: number, addrs: Record<string, string> }

/** The receiving side: sinks that answer one byte after each `total` bytes. */
async function receive (total: number): Promise<void> {
  const answerAfter = (onBytes: (n: number) => boolean): (n: number) => boolean => {
    let got = 0
    return (n) => { got += n; if (got < total) return false; got -= total; return onBytes(n) }
  }
  const server = net.createServer(s => {
    const count = answerAfter(() => s.write(new Uint8Array(1)))
    s.on('data', (d: Buffer) => { count(d.byteLength) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const addrs: Record<string, string> = {}
  for (const [mode, encryption] of Object.entries(ENCRYPTION)) {
    const host = await createHost({ listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', encryption: [encryption], privateAddresses: true })
    await host.handle(PROTOCOL, async (stream) => {
      const count = answerAfter(() => stream.send(new Uint8Array(1)))
      for await (const d of stream) count(d.byteLength)
    })
    addrs[mode] = host.getMultiaddrs()[0].toString()
  }
  // the parent asks for this process's CPU time around its round trips
  process.on('message', (m) => { if (m === 'cpu') process.send!(process.cpuUsage()) })
  process.send!({ port: (server.address() as net.AddressInfo).port, addrs } satisfies Receiver)
  // the parent ends this process when it is done (or dies: the IPC channel closes)
  process.on('disconnect', () => process.exit(0))
}

const chunk = new Uint8Array(CHUNK).fill(7)

/**
 * MB/s of `total` bytes written in 256 KiB chunks (waiting for `drained`
 * whenever `write` says to) until `arrived` settles: the receiver has them all.
 */
export async function timedTransfer (write: (c: Uint8Array) => boolean, drained: () => Promise<unknown>, arrived: Promise<unknown>, total: number): Promise<number> {
  const t0 = performance.now()
  for (let sent = 0; sent < total; sent += CHUNK) {
    if (!write(chunk)) await drained()
  }
  await arrived
  return total / 1e6 / ((performance.now() - t0) / 1000)
}

async function sendRaw (port: number, total: number): Promise<number> {
  const sock = net.connect(port, '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  const answered = new Promise(resolve => sock.once('data', resolve))
  const mbPerS = await timedTransfer(c => sock.write(c), async () => await new Promise(resolve => sock.once('drain', resolve)), answered, total)
  sock.destroy()
  return mbPerS
}

async function sendLibp2p (encryption: 'tls' | 'noise', addr: string, total: number): Promise<number> {
  const host = await createHost({ listen: [], fleet: 'bench', encryption: [encryption], privateAddresses: true })
  try {
    const stream = await host.dialProtocol(multiaddr(addr), PROTOCOL)
    const answer = stream[Symbol.asyncIterator]().next()
    const mbPerS = await timedTransfer(c => stream.send(c), async () => await stream.onDrain(), answer, total)
    await stream.close()
    return mbPerS
  } finally { await host.stop() }
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

/** MB/s per mode and round, sender here and receiver in a child process. */
export async function pairThroughput (rounds: number, total: number): Promise<Record<PairMode, number[]>> {
  return await withReceiver(total, async (receiver) => {
    const runs = Object.fromEntries(PAIR_MODES.map(m => [m, [] as number[]])) as Record<PairMode, number[]>
    for (let r = 0; r < rounds; r++) {
      for (const m of PAIR_MODES) {
        runs[m].push(m === 'raw TCP' ? await sendRaw(receiver.port, total) : await sendLibp2p(ENCRYPTION[m], receiver.addrs[m], total))
      }
    }
    return runs
  })
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
