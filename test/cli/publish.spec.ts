import assert from 'node:assert/strict'
import { join } from 'node:path'
import { runCommand, UsageError } from '../../node/cli/command.ts'
import { publishCommand } from '../../node/cli/commands/publish.ts'
import { saveCredentials } from '../../node/membership/credentials.ts'
import { NotAMemberError } from '../../protocols/membership.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'

// `fleetmesh publish` in a fleet with membership, as README's "Publishing a model to the fleet" runs it
describe('fleetmesh publish', function () {
  this.timeout(120_000)
  let mesh: TestMesh
  let publisher: string
  let clientOnly: string

  before(async () => {
    mesh = await startMesh(undefined, [], { vehicles: 2, room: 2 })
    publisher = join(mesh.dir, 'me.json')
    await saveCredentials(publisher, await mesh.fleet!.client(['client', 'publisher']))
    clientOnly = join(mesh.dir, 'client.json')
    await saveCredentials(clientOnly, await mesh.fleet!.client(['client']))
  })
  after(async () => { await mesh?.stop() })

  /** Runs the command as the CLI does, and returns its exit code and what it printed. */
  const publish = async (...args: string[]): Promise<{ code: number, out: string[] }> => {
    const out: string[] = []
    const log = console.log
    console.log = (...a: unknown[]) => { out.push(a.join(' ')) }
    try {
      return { code: await runCommand(publishCommand, ['pp-ocrv4-rec', '--bootstrap', mesh.bootAddrs[0], ...args]), out }
    } finally { console.log = log }
  }

  it('with a publisher\'s credentials: names the model, vehicles with room serve it, and its first job runs', async () => {
    const { code, out } = await publish('--credentials', publisher, '--stages', '2', '--version', '3', '--check', '--json')
    assert.equal(code, 0)
    const r = JSON.parse(out.at(-1)!) as { name: string, version: string, manifest: string, stages: number, vehiclesPerStage: number[], firstJobMs?: number }
    assert.deepEqual([r.name, r.version, r.stages], ['pp-ocrv4-rec', '3', 2])
    assert.ok(r.vehiclesPerStage.every(n => n > 0), JSON.stringify(r))
    assert.equal(typeof r.firstJobMs, 'number')
    // the fleet resolves the name it put in the DHT
    assert.equal((await mesh.client.resolve('pp-ocrv4-rec@3', { signal: AbortSignal.timeout(10_000) })).cid, r.manifest)
  })

  it('without credentials, or without the publisher role, it says what is missing', async () => {
    await assert.rejects(publish(), (err: Error) => err instanceof UsageError && /needs credentials/.test(err.message))
    await assert.rejects(publish('--credentials', clientOnly), (err: Error) => err instanceof NotAMemberError && /no publisher role/.test(err.message))
  })
})
