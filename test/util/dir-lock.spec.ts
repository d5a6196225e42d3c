import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DirectoryInUseError, lockDirectory } from '../../node/util/dir-lock.ts'

// two `fleetmesh node` processes on one --data directory would be one identity twice
describe('a vehicle data directory, one process at a time', () => {
  let dir: string
  const children: ChildProcess[] = []
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'fm-lock-')) })
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })
  /** A process whose command line is `args`, running until killed (or already gone when `exit` is set). */
  const child = async (args: string[], exit = false): Promise<number> => {
    const c = spawn(process.execPath, args, { stdio: 'ignore' })
    children.push(c)
    if (exit) await new Promise(resolve => c.once('exit', resolve))
    else await new Promise(resolve => setTimeout(resolve, 200))
    return c.pid!
  }

  it('is taken, refused to a second taker (naming the holder), and given back', async () => {
    const release = await lockDirectory(dir)
    assert.equal(await readFile(join(dir, 'lock'), 'utf8'), `${process.pid}\n`)
    await assert.rejects(lockDirectory(dir), (err: Error) => err instanceof DirectoryInUseError && err.message.includes(`(pid ${process.pid}, this process)`))
    await release()
    await (await lockDirectory(dir))()
  })

  it('is taken over from a process that is gone, or whose pid another program now has; not from a running fleetmesh', async () => {
    await writeFile(join(dir, 'lock'), `${await child(['-e', ''], true)}\n`)
    await (await lockDirectory(dir))()
    await writeFile(join(dir, 'lock'), `${await child(['-e', 'setTimeout(() => {}, 30000)'])}\n`)
    await (await lockDirectory(dir))()
    const node = await child(['-e', 'setTimeout(() => {}, 30000)', 'fleetmesh', 'node'])
    await writeFile(join(dir, 'lock'), `${node}\n`)
    await assert.rejects(lockDirectory(dir), (err: Error) => err instanceof DirectoryInUseError && err.message.includes(`(pid ${node})`))
  })
})
