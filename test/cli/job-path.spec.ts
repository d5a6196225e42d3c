import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NO_JOB, flushTrace, jobPaths, mark, traceTo } from '../../node/util/job-path.ts'
import { describePath } from '../../node/swarm/trace.ts'

/** A trace line: `ms` after a base time, in process `pid`. */
const at = (ms: number, pid: number, job: string, event: string): string => `${BigInt(1e12) + BigInt(Math.round(ms * 1e6))} ${pid} 0 ${job} ${event}`

describe('job paths (fleetmesh swarm --trace)', () => {
  it('orders a job\'s marks across processes, places a thread\'s job-less marks in their stage, and takes each step\'s median', () => {
    const lines: string[] = []
    // three jobs one after another, 100 ms apart: client in process 1, stage 0 in 2, stage 1 in 3
    const gaps = [[1, 2, 10, 3], [2, 4, 12, 1], [3, 6, 14, 2]]
    gaps.forEach(([send, toRun, run, back], n) => {
      const t = 100 * n
      const job = `job${n}`
      lines.push(at(t, 1, job, 'client.send'), at(t + send, 2, job, 'stage0.received'), at(t + send + 0.5, 2, job, 'stage0.run'))
      // the session's thread does not know the job: its marks are placed by process and time
      lines.push(at(t + send + 1, 2, NO_JOB, 'worker.start'), at(t + send + 1 + run, 2, NO_JOB, 'worker.end'))
      lines.push(at(t + send + 2 + run, 2, job, 'stage0.ran'), at(t + send + 2 + run + toRun, 3, job, 'stage1.received'))
      lines.push(at(t + send + 2 + run + toRun + back, 1, job, 'client.result'))
    })
    // a stage-1 thread's marks outside any run of this job's stages (another process) are not this job's
    lines.push(at(50, 3, NO_JOB, 'worker.start'), at(60, 3, NO_JOB, 'worker.end'))
    // a retried request counts its first arrival; lines that are not marks are skipped
    lines.push(at(208, 2, 'job2', 'stage0.received'), 'garbage', '')
    const p = jobPaths(lines.join('\n'))
    assert.equal(p.jobs, 3)
    assert.deepEqual(p.steps.map(s => `${s.from}>${s.to}`), [
      'client.send>stage0.received', 'stage0.received>stage0.run', 'stage0.run>stage0.worker.start',
      'stage0.worker.start>stage0.worker.end', 'stage0.worker.end>stage0.ran', 'stage0.ran>stage1.received', 'stage1.received>client.result'
    ])
    const ms = Object.fromEntries(p.steps.map(s => [s.from, s.ms]))
    assert.equal(ms['client.send'], 2)
    assert.equal(ms['stage0.worker.start'], 12)
    assert.equal(ms['stage0.ran'], 4)
    assert.equal(ms['stage1.received'], 2)
    assert.ok(p.steps.every(s => s.jobs === 3))
    // first mark to last: 1+0.5+0.5+run+1+toRun+back = send + 2 + run + toRun + back, median over the three
    assert.equal(p.spanMs, [1 + 2 + 10 + 2 + 3, 2 + 2 + 12 + 4 + 1, 3 + 2 + 14 + 6 + 2].sort((a, b) => a - b)[1])
    // warming up: the first jobs left out
    const later = jobPaths(lines.join('\n'), 2)
    assert.equal(later.jobs, 1)
    assert.equal(later.steps.find(s => s.from === 'stage0.worker.start')?.ms, 14)
    const text = describePath(p)
    assert.match(text[0], /over 3 jobs/)
    assert.ok(text.some(l => /stage0\.worker\.start\s+-> stage0\.worker\.end\s+12\.000/.test(l)), text.join('\n'))
  })

  it('marks nothing until told where, then appends this thread\'s marks to the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleetmesh-path-test-'))
    const file = join(dir, 'marks.txt')
    try {
      mark('before', 'x.a')
      traceTo(file)
      mark('j1', 'client.send')
      mark('j1', 'client.done')
      // a peer's job id cannot forge a line, or a field, of another job's
      mark(`evil\n${process.hrtime.bigint()} 1 0 j1 stage0.ran`, 'stage0.received')
      flushTrace()
      traceTo(undefined)
      mark('after', 'x.b')
      flushTrace()
      const lines = (await readFile(file, 'utf8')).trim().split('\n')
      assert.equal(lines.length, 3)
      assert.equal(lines[2].split(' ').length, 5)
      assert.match(lines[2].split(' ')[3], /^evil\?\d+\?1\?0\?j1\?stage0\.ran$/)
      const p = jobPaths(lines.join('\n'))
      assert.equal(p.jobs, 2)
      assert.ok(p.steps.every(s => s.to !== 'stage0.ran' && s.from !== 'stage0.ran'), JSON.stringify(p.steps))
      const [ns, pid, thread, job, event] = lines[0].split(' ')
      assert.match(ns, /^\d+$/)
      assert.equal(Number(pid), process.pid)
      assert.equal(thread, '0')
      assert.deepEqual([job, event], ['j1', 'client.send'])
      assert.ok(BigInt(lines[1].split(' ')[0]) >= BigInt(ns))
    } finally {
      traceTo(undefined)
      await rm(dir, { recursive: true, force: true })
    }
  })
})
