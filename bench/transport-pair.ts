/**
 * One connection's throughput between two processes (bench/transport.ts's
 * second table): the sender in the calling process, the receiver in a child
 * (this file run with `--receiver`), as two vehicles are. Each end then has a
 * core of its own, where bench/transport.ts's first table puts both ends'
 * work on one thread. Raw TCP, TLS 1.3 on the socket and Noise take turns,
 * `rounds` times; a fresh sending host per round, so each round makes its
 * own connection.
 */
import { fork } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../node/host.ts'

const CHUNK = 256 * 1024
const PROTOCOL = '/fleetmesh-bench/sink/1.0.0'
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
  process.send!({ port: (server.address() as net.AddressInfo).port, addrs } satisfies Receiver)
  // the parent ends this process when it is done (or dies: the IPC channel closes)
  process.on('disconnect', () => process.exit(0))
}

const chunk = new Uint8Array(CHUNK).fill(7)

/** Writes `total` bytes in 256 KiB chunks, waiting for `drained` whenever `write` says to; returns when the last is written. */
export async function sendChunks (write: (c: Uint8Array) => boolean, drained: () => Promise<unknown>, total: number): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK) {
    if (!write(chunk)) await drained()
  }
}

async function sendRaw (port: number, total: number): Promise<number> {
  const sock = net.connect(port, '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  const answered = new Promise(resolve => sock.once('data', resolve))
  const t0 = performance.now()
  await sendChunks(c => sock.write(c), async () => await new Promise(resolve => sock.once('drain', resolve)), total)
  await answered
  const ms = performance.now() - t0
  sock.destroy()
  return total / 1e6 / (ms / 1000)
}

async function sendLibp2p (encryption: 'tls' | 'noise', addr: string, total: number): Promise<number> {
  const host = await createHost({ listen: [], fleet: 'bench', encryption: [encryption], privateAddresses: true })
  try {
    const stream = await host.dialProtocol(multiaddr(addr), PROTOCOL)
    const answer = stream[Symbol.asyncIterator]().next()
    const t0 = performance.now()
    await sendChunks(c => stream.send(c), async () => await stream.onDrain(), total)
    await answer
    const ms = performance.now() - t0
    await stream.close()
    return total / 1e6 / (ms / 1000)
  } finally { await host.stop() }
}

/** MB/s per mode and round, sender here and receiver in a child process. */
export async function pairThroughput (rounds: number, total: number): Promise<Record<PairMode, number[]>> {
  const child = fork(fileURLToPath(import.meta.url), ['--receiver', String(total)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  try {
    const receiver = await new Promise<Receiver>((resolve, reject) => {
      child.once('message', m => { resolve(m as Receiver) })
      child.once('exit', code => { reject(new Error(`the receiving process exited (${code})`)) })
    })
    const runs = Object.fromEntries(PAIR_MODES.map(m => [m, [] as number[]])) as Record<PairMode, number[]>
    for (let r = 0; r < rounds; r++) {
      for (const m of PAIR_MODES) {
        runs[m].push(m === 'raw TCP' ? await sendRaw(receiver.port, total) : await sendLibp2p(ENCRYPTION[m], receiver.addrs[m], total))
      }
    }
    return runs
  } finally { child.kill() }
}

if (process.argv[2] === '--receiver') await receive(Number(process.argv[3]))
