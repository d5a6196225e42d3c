/**
 * Gateway overhead: the same job through the HTTP gateway (Open Inference
 * Protocol, JSON and binary tensors) and through the TypeScript client,
 * interleaved against one swarm so both see the same machine load.
 *
 *   node bench/gateway.ts [--jobs 60]
 *
 * Prints p50 / p95 per path and the HTTP/client ratio, then one JSON line.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createClient, imageInput } from '../node/client/index.ts'
import { asFloat32 } from '../protocols/tensor.ts'

const MAIN = fileURLToPath(new URL('../node/cli/main.ts', import.meta.url))
const SAMPLE = fileURLToPath(new URL('../samples/text-lines/03.png', import.meta.url))
const { values } = parseArgs({ options: { jobs: { type: 'string', default: '60' } } })
const N = Number(values.jobs)

const swarm = spawn(process.execPath, [MAIN, 'swarm', '--nodes', '3', '--jobs', '2', '--http', '127.0.0.1:0', '--keep', '--fleet', 'bench-gw'], { stdio: ['ignore', 'pipe', 'pipe'] })
let log = ''
const ready = new Promise<{ url: string, boot: string }>((resolve, reject) => {
  const onData = (d: Buffer): void => {
    log += d.toString()
    const url = /gateway on (http:\/\/[^/\s]+)\/v2/.exec(log)?.[1]
    const boot = /bootstrap (\/ip4\/\S+\/p2p\/\S+);/.exec(log)?.[1]
    if (url !== undefined && boot !== undefined) resolve({ url, boot })
  }
  swarm.stdout.on('data', onData)
  swarm.stderr.on('data', onData)
  swarm.on('exit', code => { reject(new Error(`swarm exited ${code}:\n${log}`)) })
})
const { url, boot } = await ready
const fleet = await createClient({ bootstrap: [boot], fleet: 'bench-gw' })
const x = imageInput('pp-ocrv4-rec', SAMPLE)
const jsonBody = JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', data: Array.from(asFloat32(x)) }] })
const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'x', shape: x.dims, datatype: 'FP32', parameters: { binary_data_size: x.data.byteLength } }], parameters: { binary_data_output: true } }))
const binaryBody = Buffer.concat([header, x.data])

const paths: Record<string, () => Promise<void>> = {
  'TypeScript client': async () => { await fleet.infer('pp-ocrv4-rec', [x]) },
  'HTTP, binary tensors': async () => {
    const r = await fetch(`${url}/v2/models/pp-ocrv4-rec/infer`, { method: 'POST', body: binaryBody, headers: { 'inference-header-content-length': String(header.byteLength) } })
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`)
    await r.arrayBuffer()
  },
  'HTTP, JSON tensors': async () => {
    const r = await fetch(`${url}/v2/models/pp-ocrv4-rec/infer`, { method: 'POST', body: jsonBody, headers: { 'content-type': 'application/json' } })
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`)
    await r.json()
  }
}
const times: Record<string, number[]> = Object.fromEntries(Object.keys(paths).map(k => [k, []]))
for (const f of Object.values(paths)) await f() // warm up every path
for (let i = 0; i < N; i++) {
  for (const [name, f] of Object.entries(paths)) {
    const t0 = performance.now()
    await f()
    times[name].push(performance.now() - t0)
  }
}
await fleet.close()
swarm.kill('SIGINT')
await new Promise(resolve => swarm.once('exit', resolve))

const pct = (v: number[], p: number): number => { const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)] }
const base = pct(times['TypeScript client'], 50)
const rows = Object.entries(times).map(([path, t]) => ({ path, p50Ms: Math.round(pct(t, 50) * 10) / 10, p95Ms: Math.round(pct(t, 95) * 10) / 10, vsClient: Math.round(pct(t, 50) / base * 100) / 100 }))
console.log(`same job (PP-OCRv4 rec, 1x3x48x320 in, 1x40x6625 out), ${N} runs per path, interleaved; 3 vehicle processes`)
for (const r of rows) console.log(`${r.path.padEnd(22)} p50 ${String(r.p50Ms).padStart(7)} ms  p95 ${String(r.p95Ms).padStart(7)} ms  p50 vs client ${r.vsClient}`)
console.log(JSON.stringify({ bench: 'gateway', runs: N, rows }))
