/**
 * The swarm's measurement of control traffic (node/swarm/traffic.ts) reads `ss -tinp`, and vehicles
 * that share a process (node/swarm/group.ts) each see only their own events; its CPU per job
 * (node/swarm/cpu.ts) tells a process's main thread from its other threads.
 */
import assert from 'node:assert/strict'
import { createServer, connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { placeStages } from '../../node/scheduler/placement.ts'
import { CELL_SIZE } from '../../node/capacity/cells.ts'
import { cellIndex, defaultCells } from '../../node/swarm/mesh.ts'
import { GroupMember } from '../../node/swarm/processes.ts'
import type { PeerProcess } from '../../node/swarm/processes.ts'
import { cpuSeconds, parseSs, rssBytes, socketBytes } from '../../node/swarm/traffic.ts'
import { CpuMeter } from '../../node/swarm/cpu.ts'
import { spawn } from 'node:child_process'
import { once } from 'node:events'

const SS = `ESTAB 0      0      127.0.0.1:36660 127.0.0.1:45678 users:(("node",pid=29841,fd=20))
\t bbr wscale:10,10 rto:204 rtt:0.032/0.015 mss:32768 cwnd:11 bytes_sent:5 bytes_acked:6 bytes_received:7 segs_out:4
ESTAB 0      0      127.0.0.1:45678 127.0.0.1:36660 users:(("node",pid=29841,fd=21))
\t bbr wscale:10,10 rto:204 bytes_sent:100 bytes_acked:5 bytes_received:1000 segs_out:2
ESTAB 0      0      127.0.0.1:45679 127.0.0.1:36661 users:(("node",pid=7,fd=21))
\t bbr wscale:10,10 rto:204 bytes_received:3 segs_out:2
`

describe('swarm traffic and vehicle groups', () => {
  it('sums the socket byte counts of each process from ss output', () => {
    const m = parseSs(SS)
    assert.deepEqual(m.get(29841), { sent: 105, received: 1007, sockets: 2 })
    assert.deepEqual(m.get(7), { sent: 0, received: 3, sockets: 1 })
  })

  it('reads the real sockets of this process', async function () {
    const server = createServer(s => { s.on('data', d => s.write(d)) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const c = connect((server.address() as AddressInfo).port, '127.0.0.1')
    try {
      await new Promise<void>(resolve => c.once('connect', () => { resolve() }))
      c.write(Buffer.alloc(5000))
      await new Promise(resolve => setTimeout(resolve, 200))
      const mine = (await socketBytes()).get(process.pid)
      if (mine === undefined) { this.skip() } // no ss on this machine
      assert.ok(mine.sent >= 10_000 && mine.received >= 10_000, JSON.stringify(mine))
    } finally { c.destroy(); server.close() }
  })

  it('reads a process\'s CPU time and resident memory from /proc', async () => {
    // compared with Node's own count of this process's CPU, not with wall time: on a busy machine a busy loop gets less than its wall time
    const own = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }
    const before = await cpuSeconds(process.pid)
    const ownBefore = own()
    assert.ok(before !== undefined && before > 0)
    while (own() - ownBefore < 0.3) { /* busy */ }
    const used = (await cpuSeconds(process.pid) ?? 0) - before
    const ownUsed = own() - ownBefore
    // /proc counts in clock ticks (10 ms); the two reads each side are a few µs apart
    assert.ok(Math.abs(used - ownUsed) < 0.05, `/proc says ${used} s of CPU, Node says ${ownUsed} s`)
    const rss = await rssBytes(process.pid) ?? 0
    assert.ok(Math.abs(rss - process.memoryUsage().rss) < 0.2 * rss, `${rss} vs ${process.memoryUsage().rss}`)
    assert.equal(await cpuSeconds(2 ** 30), undefined, 'no such process')
  })

  it('tells a process\'s main thread\'s CPU from its other threads\' (a stage session\'s worker)', async function () {
    if (await cpuSeconds(process.pid, process.pid) === undefined) this.skip() // no /proc on this machine
    // a "vehicle": on 'go', 300 ms of CPU on its main thread, then 600 ms on a worker thread (CPU time,
    // not wall time: on a busy machine a thread that loops for 300 ms may run for less)
    const busy = 'const busy = (ms) => { const t = process.threadCpuUsage(); for (;;) { const u = process.threadCpuUsage(t); if (u.user + u.system >= ms * 1000) return } }'
    const child = spawn(process.execPath, ['-e', `
      const { Worker } = require('node:worker_threads')
      ${busy}
      process.stdin.once('data', () => {
        busy(300)
        new Worker(${JSON.stringify(`${busy}; busy(600); require("node:worker_threads").parentPort.postMessage(1)`)}, { eval: true })
          .once('message', () => { process.stdout.write('done') })
      })
      process.stdout.write('ready')`], { stdio: ['pipe', 'pipe', 'inherit'] })
    try {
      await once(child.stdout, 'data')
      const meter = await CpuMeter.start([child.pid!, child.pid!], undefined)
      assert.ok(meter !== undefined)
      child.stdin.write('go')
      await once(child.stdout, 'data')
      const per = (await meter.perJob(3))!
      // per job of 3: 100 ms on the main thread, 200 on the others (ticks are 10 ms; thread start-up adds a little)
      assert.ok(per.vehicleMain >= 95 && per.vehicleMain < 160, JSON.stringify(per))
      assert.ok(per.vehicleThreads >= 195 && per.vehicleThreads < 260, JSON.stringify(per))
      assert.ok(per.client >= 0 && per.bootstrap === 0, JSON.stringify(per))
      assert.ok(Math.abs(per.total - (per.vehicleMain + per.vehicleThreads + per.client)) < 0.2, JSON.stringify(per))
    } finally { child.kill() }
  })

  it('a vehicle of a group gets its own events and waits for its own', async () => {
    const listeners = new Set<(e: any) => void>()
    const group = {
      pid: 42,
      running: true,
      onEvent: (fn: (e: any) => void) => { listeners.add(fn); return () => { listeners.delete(fn) } },
      waitFor: async (match: (e: any) => boolean) => await new Promise(resolve => { listeners.add(e => { if (match(e)) resolve(e) }) }),
      send: () => {}
    } as unknown as PeerProcess
    const a = new GroupMember(group, 'v1', 10)
    const seen: string[] = []
    a.onEvent(e => seen.push(e.type))
    const served = a.waitFor(e => e.type === 'serving', 5000, 'serving')
    for (const l of [...listeners]) l({ type: 'serving', vehicle: 'v2' })
    for (const l of [...listeners]) l({ type: 'listening', vehicle: 'v1' })
    for (const l of [...listeners]) l({ type: 'serving', vehicle: 'v1' })
    assert.deepEqual(await served, { type: 'serving', vehicle: 'v1' })
    assert.deepEqual(seen, ['listening', 'serving'])
    assert.equal(a.pid, 42)
    assert.equal(a.share, 10)
  })

  it('a swarm past 32 vehicles splits them into cells of at most 32, each holding every stage', () => {
    assert.equal(defaultCells(32), undefined)
    for (const nodes of [33, 64, 100, 256]) {
      const cells = defaultCells(nodes)!
      assert.equal(cells.length, Math.ceil(nodes / CELL_SIZE))
      for (const stages of [1, 2, 3, 4, 5]) {
        const placement = placeStages(nodes, stages)
        const members = cells.map((_, c) => placement.filter((_, i) => cellIndex(i, nodes, cells.length) === c))
        for (const m of members) {
          assert.ok(m.length <= CELL_SIZE, `${m.length} vehicles in a cell`)
          assert.equal(new Set(m.flat()).size, stages, `${nodes} vehicles, ${stages} stages: a cell lacks a stage`)
        }
      }
    }
  })
})
