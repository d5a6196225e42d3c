/**
 * A swarm's stage priority when none is asked for (node/swarm/spare-cpu.ts):
 * SCHED_IDLE, as a car lends, unless less than half a core is idle. The
 * readings are os.cpus()'s; the last test measures cores that busy loops of
 * its own keep busy (at nice 19: busy all the same, but the suite's other
 * tests barely notice them).
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { cpus } from 'node:os'
import { MIN_SPARE_CORES, describeBusy, measureSpareCpu, spareBetween, swarmStagePriority } from '../../node/swarm/spare-cpu.ts'

describe('a swarm\'s stage priority from the CPU the machine spares', function () {
  this.timeout(30_000)

  it('sums each core\'s idle share of the window', () => {
    // core 0 idle the whole window, core 1 idle a quarter of it
    const spare = spareBetween([{ idle: 100, total: 1000 }, { idle: 50, total: 500 }], [{ idle: 500, total: 1400 }, { idle: 150, total: 900 }])
    assert.deepEqual(spare, { cores: 2, spare: 1.25 })
  })

  it('says nothing from readings that do not compare (no cores, another count of cores, no time passed)', () => {
    assert.equal(spareBetween([], []), undefined)
    assert.equal(spareBetween([{ idle: 0, total: 10 }], [{ idle: 0, total: 10 }, { idle: 0, total: 10 }]), undefined)
    assert.equal(spareBetween([{ idle: 5, total: 10 }], [{ idle: 5, total: 10 }]), undefined)
  })

  it('keeps SCHED_IDLE with half a core idle or more, or nothing measured; normal priority below that', () => {
    assert.equal(swarmStagePriority(undefined), 'idle')
    assert.equal(swarmStagePriority({ cores: 2, spare: MIN_SPARE_CORES }), 'idle')
    assert.equal(swarmStagePriority({ cores: 2, spare: 1.6 }), 'idle')
    assert.equal(swarmStagePriority({ cores: 2, spare: 0.49 }), 'normal')
    assert.equal(swarmStagePriority({ cores: 8, spare: 0 }), 'normal')
    assert.match(describeBusy({ cores: 2, spare: 0.1 }), /^the cores are 95% busy with other work \(0\.10 of 2 idle\): stage threads run at normal priority/)
  })

  it('stops watching when its signal aborts (a swarm interrupted as it starts)', async () => {
    const t0 = performance.now()
    await assert.rejects(measureSpareCpu(10_000, AbortSignal.timeout(50)), { name: 'AbortError' })
    assert.ok(performance.now() - t0 < 5000, 'it did not wait out its window')
  })

  it('measures cores that busy loops keep busy as having less than half a core to spare', async () => {
    const loops: ChildProcess[] = cpus().map(() => spawn('nice', ['-n', '19', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' }))
    try {
      await new Promise(resolve => setTimeout(resolve, 300))
      const spare = await measureSpareCpu(500)
      assert.ok(spare !== undefined, 'os.cpus() tells the idle time on this platform')
      assert.equal(spare.cores, cpus().length)
      assert.ok(spare.spare < MIN_SPARE_CORES, `${spare.spare} of ${spare.cores} cores idle beside ${loops.length} busy loops`)
      assert.equal(swarmStagePriority(spare), 'normal')
    } finally {
      for (const l of loops) l.kill('SIGKILL')
    }
  })
})
