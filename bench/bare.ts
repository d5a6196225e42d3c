/**
 * What issue 13's first ratio could be with the least plumbing there is:
 * the same two stages (cut as the swarm cuts them) in two processes, each
 * session on a worker thread as a vehicle runs it, the last stage decoding
 * text, jobs sent in groups as the swarm's client sends them. Between the
 * processes only length-prefixed frames of tensors (a JSON head): no infer
 * protocol, no scheduler, no ledger. Each round runs its modes in turn:
 *
 * - `tcp`: the frames over plain loopback TCP sockets;
 * - `libp2p`: the same frames over one kept stream per link of fleetmesh's own
 *   hosts (TLS 1.3 on the socket, yamux), so the difference is the transport's;
 * - `mesh`: the real thing, `fleetmesh swarm --nodes 2 --stages 2 --output text`.
 *
 * Each beside the whole model in one process (timed before and after it, as the
 * swarm does). The gap between the floor and `mesh` is what a leaner per-job
 * data path could win at most.
 *
 *   node bench/bare.ts [--jobs 1000] [--group 2] [--in-flight 4] [--rounds 3] [--modes tcp,libp2p,mesh]
 *                      [--no-digest] [--receipts] [--answers]
 *
 * Every frame is digested (SHA-256) by its sender and its receiver, as a
 * mesh job's receipts need; `--no-digest` leaves that out. Two switches add
 * more of a mesh job's work, to see what each costs: `--receipts` (each stage
 * signs its input's and output's digests with Ed25519, the signatures travel
 * on with the frames, and the client checks them against the digests of what
 * it sent and got: a run fails if one does not hold) and `--answers` (the last
 * stage answers the one before it, which relays that to the client, as the
 * chain's answer goes back). Prints a line per run (jobs/s, the ratio, CPU a
 * job and where, texts right), then one JSON line with each mode's median ratio.
 */
import { fork, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { Uint8ArrayList } from 'uint8arraylist'
import { concatBatch } from '../node/client/microbatch.ts'
import { createHost } from '../node/host.ts'
import type { Host } from '../node/host.ts'
import { DEFAULT_MODEL, dictionaryPath, modelSource, sampleInputs } from '../node/models/catalog.ts'
import { ctcDecodeRow, loadDictionary } from '../node/models/ocr.ts'
import { createSession, runSession } from '../node/models/ort.ts'
import { shardModel } from '../node/models/shard.ts'
import { workerSession } from '../node/runtime/session-worker.ts'
import { CpuMeter, describeCpu } from '../node/swarm/cpu.ts'
import { drained } from '../node/util/drain.ts'
import type { CpuPerJob } from '../node/swarm/cpu.ts'
import type { Tensor } from '../protocols/tensor.ts'

const here = fileURLToPath(import.meta.url)
const PROTOCOL = '/fleetmesh-bench/bare/1.0.0'
const MODES = ['tcp', 'libp2p', 'mesh'] as const
type Mode = typeof MODES[number]
type Transport = Exclude<Mode, 'mesh'>
const r3 = (x: number): number => Math.round(x * 1000) / 1000
const src = modelSource(DEFAULT_MODEL)

interface Receipt { input: string, output: string, signature: string }
interface Header { tensors: Array<Omit<Tensor, 'data'> & { bytes: number }>, texts?: string[], receipts?: Receipt[] }
/** A frame: u32 length, u32 header length, the JSON header (tensors without data, texts, receipts), the tensors' bytes in order. */
function frame (tensors: Tensor[], texts?: string[], receipts?: Receipt[]): Uint8Array[] {
  const head = new TextEncoder().encode(JSON.stringify({ tensors: tensors.map(t => ({ name: t.name, dtype: t.dtype, dims: t.dims, bytes: t.data.byteLength })), texts, receipts } satisfies Header))
  const prefix = new DataView(new ArrayBuffer(8))
  prefix.setUint32(0, 4 + head.byteLength + tensors.reduce((n, t) => n + t.data.byteLength, 0))
  prefix.setUint32(4, head.byteLength)
  return [new Uint8Array(prefix.buffer), head, ...tensors.map(t => t.data)]
}
/** Whole frames out of the bytes read so far (a frame that spans chunks is copied into one buffer). */
function * frames (buf: Uint8ArrayList): Generator<{ header: Header, tensors: Tensor[], bytes: Uint8Array }> {
  while (buf.byteLength >= 4 && buf.byteLength >= 4 + buf.getUint32(0)) {
    const bytes = buf.subarray(4, 4 + buf.getUint32(0))
    buf.consume(4 + bytes.byteLength)
    const hl = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0)
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + hl))) as Header
    let at = 4 + hl
    const tensors = header.tensors.map(t => { const data = bytes.subarray(at, at + t.bytes); at += t.bytes; return { name: t.name, dtype: t.dtype, dims: t.dims, data } })
    yield { header, tensors, bytes }
  }
}

/** What a link that fails does: a stage process says why and exits (its parent then fails the run); the parent's run fails. */
let linkFailed = (err: Error): void => { console.error(`bench/bare: a link failed: ${err.message}`); process.exit(1) }

/** One end of a link: send a frame's parts, and the frames that arrive. */
interface Link { send: (parts: Uint8Array[]) => void, onFrame: (f: (h: Header, t: Tensor[], bytes: Uint8Array) => void) => void, close: () => void }
function tcpLink (sock: net.Socket): Link {
  sock.setNoDelay(true)
  const buf = new Uint8ArrayList()
  let handler: (h: Header, t: Tensor[], b: Uint8Array) => void = () => {}
  sock.on('data', (d: Buffer) => { buf.append(d); for (const f of frames(buf)) handler(f.header, f.tensors, f.bytes) })
  sock.on('error', err => { linkFailed(err) })
  return { send: parts => { sock.cork(); for (const p of parts) sock.write(p); sock.uncork() }, onFrame: f => { handler = f }, close: () => { sock.destroy() } }
}
function streamLink (stream: EventTarget & { send: (b: Uint8Array) => boolean, abort: (e: Error) => void, [Symbol.asyncIterator]: () => AsyncIterator<Uint8Array | Uint8ArrayList> }): Link {
  const buf = new Uint8ArrayList()
  let handler: (h: Header, t: Tensor[], b: Uint8Array) => void = () => {}
  let closed = false
  void (async () => { for await (const d of stream as AsyncIterable<Uint8Array | Uint8ArrayList>) { buf.append(d); for (const f of frames(buf)) handler(f.header, f.tensors, f.bytes) } })().catch((err: Error) => { if (!closed) linkFailed(err) })
  // frames leave in order, each part after the stream has room for it
  let sending = Promise.resolve()
  const send = (parts: Uint8Array[]): void => {
    sending = sending.then(async () => { for (const p of parts) if (!stream.send(p)) await drained(stream) }).catch((err: Error) => { if (!closed) linkFailed(err) })
  }
  return { send, onFrame: f => { handler = f }, close: () => { closed = true; stream.abort(new Error('done')) } }
}

/** Listens for the one link that will bring frames; tells the parent where. */
async function listen (transport: Transport): Promise<{ addr: string, link: Promise<Link>, host?: Host, close: () => Promise<void> }> {
  if (transport === 'tcp') {
    let got!: (l: Link) => void
    const link = new Promise<Link>(resolve => { got = resolve })
    const server = net.createServer(s => { got(tcpLink(s)) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const sockets: net.Socket[] = []
    server.on('connection', s => sockets.push(s))
    const close = async (): Promise<void> => { for (const s of sockets) s.destroy(); await new Promise(resolve => server.close(resolve)) }
    return { addr: String((server.address() as net.AddressInfo).port), link, close }
  }
  const host = await createHost({ listen: ['/ip4/127.0.0.1/tcp/0'], fleet: 'bench', privateAddresses: true })
  const link = new Promise<Link>(resolve => { void host.handle(PROTOCOL, (stream) => { resolve(streamLink(stream)) }) })
  return { addr: host.getMultiaddrs()[0].toString(), link, host, close: async () => { await host.stop() } }
}
async function dial (transport: Transport, addr: string, host?: Host): Promise<Link> {
  if (transport === 'tcp') {
    const sock = net.connect(Number(addr), '127.0.0.1')
    await new Promise(resolve => sock.once('connect', resolve))
    return tcpLink(sock)
  }
  const h = host ?? await createHost({ listen: [], fleet: 'bench', privateAddresses: true })
  return streamLink(await h.dialProtocol(multiaddr(addr), PROTOCOL))
}
const sha256 = (parts: Uint8Array[]): Buffer => { const h = createHash('sha256'); for (const p of parts) h.update(p); return h.digest() }
const textBytes = (texts: string[]): Uint8Array[] => texts.map(t => new TextEncoder().encode(t))
const signed = (r: Receipt): Buffer => Buffer.concat([Buffer.from(r.input, 'base64'), Buffer.from(r.output, 'base64')])
interface Switches { digest: boolean, receipts: boolean, answers: boolean }

/** A stage process: frames in from the link it listens on, its stage run on a worker thread, frames on to `next`. */
async function stage (): Promise<void> {
  const init = await new Promise<{ transport: Transport, shard: Uint8Array, inputs: string[], outputs: string[], last: boolean } & Switches>(resolve => process.once('message', m => { resolve(m as never) }))
  const keys = generateKeyPairSync('ed25519')
  const session = await workerSession(init.shard, { intraOpThreads: 1 })
  const dict = init.last ? loadDictionary(dictionaryPath(src.task!.dictionary)) : []
  const { addr, link, host } = await listen(init.transport)
  process.send!({ addr, key: keys.publicKey.export({ type: 'spki', format: 'der' }) })
  const next = await new Promise<string>(resolve => process.once('message', m => { resolve(m as string) }))
  const out = await dial(init.transport, next, host)
  const into = await link
  // the chain's answer: what comes back from the next stage goes back to the one before
  if (init.answers && !init.last) out.onFrame(h => { into.send(frame([], h.texts)) })
  into.onFrame((h, tensors, bytes) => {
    const inDigest = init.digest || init.receipts ? sha256(init.receipts ? tensors.map(t => t.data) : [bytes]) : undefined
    const feeds = init.inputs.map(n => tensors.find(t => t.name === n)!)
    void session.run(feeds).then(({ outputs }) => {
      const pool = new Map([...tensors, ...outputs].map(t => [t.name, t]))
      const handed = init.outputs.map(n => pool.get(n)!)
      const texts = init.last ? Array.from({ length: handed[0].dims[0] }, (_, row) => ctcDecodeRow(handed[0], dict, row).text) : undefined
      const body = texts !== undefined ? textBytes(texts) : handed.map(t => t.data)
      let receipts = h.receipts
      if (init.receipts) {
        const r = { input: inDigest!.toString('base64'), output: sha256(body).toString('base64'), signature: '' }
        r.signature = sign(null, signed(r), keys.privateKey).toString('base64')
        receipts = [...(receipts ?? []), r]
      }
      const parts = texts !== undefined ? frame([], texts, receipts) : frame(handed, undefined, receipts)
      out.send(parts)
      if (init.digest && !init.receipts) sha256(parts)
      if (init.answers && init.last) into.send(frame([], ['answered']))
    })
  })
  process.on('disconnect', () => process.exit(0))
}

/** Runs `script` (relative to this file) with `args` in a process of its own: the JSON line it prints last. */
async function lastJsonLine (script: string, args: string[]): Promise<any> {
  const child = spawn(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise(resolve => child.once('exit', resolve))
  try { return JSON.parse(out.trim().split('\n').at(-1)!) } catch { throw new Error(`${script} ${args[0]} exited (${String(code)}) without a JSON line`) }
}

/** Items/s of the whole model in a process of its own (bench/ceiling.ts --one). */
async function wholeModel (runs: number): Promise<number> {
  return (await lastJsonLine('./ceiling.ts', ['--one', '--runs', String(runs)])).itemsPerS
}

/** Jobs/s and CPU ms a job (all processes) of the two-stage floor over `transport`; every text checked against the whole model's. */
async function floor (transport: Transport, o: { jobs: number, group: number, inFlight: number } & Switches, sharded: Awaited<ReturnType<typeof shardModel>>, inputs: Tensor[][], expected: string[]): Promise<{ jobsPerS: number, cpu: CpuPerJob | undefined, correct: number }> {
  const children: ChildProcess[] = []
  const host = transport === 'libp2p' ? await createHost({ listen: [], fleet: 'bench', privateAddresses: true }) : undefined
  let back: Awaited<ReturnType<typeof listen>> | undefined
  let out: Link | undefined
  try {
    const inbound = back = await listen(transport)
    const addrs: string[] = []
    const keys: KeyObject[] = []
    for (const [i, s] of sharded.manifest.stages.entries()) {
      const c = fork(here, ['--stage'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
      children.push(c)
      c.send({ transport, shard: sharded.shards.get(s.cid), inputs: s.inputs.map(x => x.name), outputs: s.outputs.map(x => x.name), last: i === sharded.manifest.stages.length - 1, digest: o.digest, receipts: o.receipts, answers: o.answers })
      const m = await new Promise<{ addr: string, key: Uint8Array }>((resolve, reject) => { c.once('message', m => { resolve(m as never) }); c.once('exit', code => { reject(new Error(`stage ${i} exited (${code})`)) }) })
      addrs.push(m.addr)
      keys.push(createPublicKey({ key: Buffer.from(m.key), format: 'der', type: 'spki' }))
    }
    children.forEach((c, i) => c.send(i + 1 < addrs.length ? addrs[i + 1] : inbound.addr))
    out = await dial(transport, addrs[0], host)
    const to = out
    const results = await inbound.link
    const groups = Math.ceil(o.jobs / o.group)
    const warm = Math.ceil(200 / o.group)
    let sent = 0; let done = 0; let correct = 0; let refused = 0; let t0 = 0
    let meter: Promise<CpuMeter | undefined> | undefined
    const requests: string[] = []
    const send = (): void => {
      const g = sent++
      const batch = concatBatch(Array.from({ length: o.group }, (_, k) => inputs[(g * o.group + k) % inputs.length]))
      if (o.receipts) requests.push(sha256(batch.map(t => t.data)).toString('base64'))
      to.send(frame(batch))
    }
    /** Every stage's receipt signed by it, the first naming what was sent, each the one before's output, the last what came back. */
    const receiptsHold = (h: Header): boolean => {
      const rs = h.receipts ?? []
      return rs.length === keys.length && rs[0].input === requests.shift() && rs.every((r, i) => verify(null, signed(r), keys[i], Buffer.from(r.signature, 'base64')) && (i === 0 || r.input === rs[i - 1].output)) &&
        rs[rs.length - 1].output === sha256(textBytes(h.texts!)).toString('base64')
    }
    const finished = new Promise<void>((resolve, reject) => {
      linkFailed = reject
      for (const [i, c] of children.entries()) c.once('exit', code => { reject(new Error(`stage ${i} exited (${code})`)) })
      results.onFrame(h => {
        const g = done++
        if (o.receipts && !receiptsHold(h)) refused++
        if (g >= warm) h.texts!.forEach((text, k) => { if (text === expected[(g * o.group + k) % inputs.length]) correct++ })
        if (done === warm) { t0 = performance.now(); meter = CpuMeter.start(children.map(c => c.pid!), undefined) }
        if (done === warm + groups) resolve()
        else if (sent < warm + groups) send()
      })
    })
    for (let i = 0; i < o.inFlight / o.group; i++) send()
    let timer: NodeJS.Timeout | undefined
    await Promise.race([finished, new Promise((resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${transport}: ${done} of ${warm + groups} groups back after 300 s`)) }, 300_000) })]).finally(() => { clearTimeout(timer) })
    const s = (performance.now() - t0) / 1000
    const jobs = groups * o.group
    if (refused > 0) throw new Error(`${refused} groups' receipts did not hold`)
    return { jobsPerS: jobs / s, cpu: await (await meter)?.perJob(jobs), correct }
  } finally {
    out?.close()
    for (const c of children) c.kill('SIGKILL')
    await host?.stop()
    await back?.close()
  }
}

async function mesh (o: { jobs: number, group: number, inFlight: number }): Promise<{ ratio: number, jobsPerS: number, cpu: CpuPerJob, correct: number }> {
  const r = await lastJsonLine('../node/cli/main.ts', ['swarm', '--nodes', '2', '--stages', '2', '--jobs', String(o.jobs), '--concurrency', String(o.inFlight), '--coalesce', String(o.group), '--output', 'text', '--json'])
  return { ratio: r.jobsPerS / r.localJobsPerS, jobsPerS: r.jobsPerS, cpu: r.cpuMsPerJob, correct: r.correctText }
}

if (process.argv[2] === '--stage') await stage()
else {
  const { values } = parseArgs({ options: { jobs: { type: 'string', default: '1000' }, group: { type: 'string', default: '2' }, 'in-flight': { type: 'string', default: '4' }, rounds: { type: 'string', default: '3' }, modes: { type: 'string', default: MODES.join(',') }, digest: { type: 'boolean', default: true }, receipts: { type: 'boolean', default: false }, answers: { type: 'boolean', default: false } }, allowNegative: true })
  const o = { jobs: Number(values.jobs), group: Number(values.group), inFlight: Number(values['in-flight']), digest: values.digest, receipts: values.receipts, answers: values.answers }
  const modes = values.modes.split(',') as Mode[]
  const unknown = modes.find(m => !MODES.includes(m))
  if (unknown !== undefined) { console.error(`unknown mode "${unknown}" (known: ${MODES.join(', ')})`); process.exit(2) }
  const model = await readFile(src.path)
  const sharded = await shardModel(model, { stages: 2, name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path) })
  const inputs = sampleInputs(src, Object.keys(src.probeShapes)[0])
  const whole = await createSession(model)
  const dict = loadDictionary(dictionaryPath(src.task!.dictionary))
  const expected = await Promise.all(inputs.map(async x => ctcDecodeRow((await runSession(whole, x))[0], dict, 0).text))
  await whole.release()
  console.log(`the two stages' cut: ${sharded.manifest.stages.map(s => s.outputs.map(t => t.name).join(',')).join(' | ')}; ${o.jobs} jobs, ${o.inFlight} in flight in groups of ${o.group}${o.digest ? ', SHA-256 of every frame at both ends' : ''}${o.receipts ? ', signed receipts checked by the client' : ''}${o.answers ? ', the chain\'s answers' : ''}`)
  const ratios: Record<Mode, number[]> = { tcp: [], libp2p: [], mesh: [] }
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const mode of modes) {
      let line: string
      if (mode === 'mesh') {
        const m = await mesh(o)
        ratios.mesh.push(m.ratio)
        line = `${m.jobsPerS.toFixed(1)} jobs/s, ratio ${r3(m.ratio)} (the swarm's own whole-model timing), CPU a job ${describeCpu(m.cpu)}, ${m.correct} texts right`
      } else {
        const before = await wholeModel(300)
        const f = await floor(mode, o, sharded, inputs, expected)
        const local = (before + await wholeModel(300)) / 2
        ratios[mode].push(f.jobsPerS / local)
        line = `${f.jobsPerS.toFixed(1)} jobs/s against ${local.toFixed(1)} whole: ratio ${r3(f.jobsPerS / local)}, CPU a job ${f.cpu !== undefined ? describeCpu(f.cpu) : 'unknown'}, ${f.correct} texts right`
      }
      console.log(`round ${r + 1} ${mode.padEnd(6)} ${line}`)
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  console.log(JSON.stringify({ bench: 'bare', ...o, ratios: Object.fromEntries(modes.map(m => [m, r3(median(ratios[m]))])), runs: Object.fromEntries(modes.map(m => [m, ratios[m].map(r3)])) }))
}
