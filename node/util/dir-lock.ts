/**
 * One process per vehicle data directory. The directory holds the vehicle's
 * identity (its key), and two processes with one identity confuse every
 * peer: one peer id at two addresses, two heartbeat sequences, two stores.
 * A `lock` file names the process that holds the directory; one whose
 * process is gone (a crash, SIGKILL) is taken over.
 */
import { readFileSync } from 'node:fs'
import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'

export class DirectoryInUseError extends Error {
  readonly name = 'DirectoryInUseError'
  readonly code = 'ERR_DIRECTORY_IN_USE'
}

/** Whether `pid` is a running fleetmesh process (this one included); a pid reused by another program is not. */
function isFleetmesh (pid: number): boolean {
  if (pid === process.pid) return true
  try { process.kill(pid, 0) } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
  let cmdline: string
  try { cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8') } catch { return true } // no /proc: assume it is
  return /fleetmesh|main\.[jt]s/.test(cmdline)
}

/**
 * Takes `dir` for this process (it must exist) and returns the function that
 * gives it back. Throws a DirectoryInUseError naming the process that holds it.
 */
export async function lockDirectory (dir: string): Promise<() => Promise<void>> {
  const file = join(dir, 'lock')
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, 'wx')
      try { await handle.writeFile(`${process.pid}\n`) } finally { await handle.close() }
      let released = false
      return async () => {
        if (released) return
        released = true
        await unlink(file).catch(() => {})
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10)
      if (Number.isInteger(pid) && pid > 0 && isFleetmesh(pid)) {
        throw new DirectoryInUseError(`${dir} is in use by another fleetmesh node (pid ${pid}${pid === process.pid ? ', this process' : ''}): each vehicle needs a data directory of its own, which holds its identity (--data); if that process is no fleetmesh node, remove ${file}`)
      }
      // its process is gone: take it over
      await unlink(file).catch(() => {})
    }
  }
  throw new DirectoryInUseError(`${dir}: could not take its lock file`)
}
