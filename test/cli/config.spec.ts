import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { envName, runCommand, UsageError } from '../../node/cli/command.ts'
import type { Command } from '../../node/cli/command.ts'

describe('command settings', () => {
  let seen: Record<string, unknown> = {}
  const cmd: Command = {
    name: 'node',
    summary: 'test',
    usage: '',
    options: {
      fleet: { type: 'string', description: '', default: 'dev' },
      'drain-ms': { type: 'string', description: '', default: '10000' },
      bootstrap: { type: 'string', multiple: true, description: '' },
      json: { type: 'boolean', description: '' },
      data: { type: 'string', description: '', default: '.fleetmesh/node' }
    },
    async run (o) { seen = o; return 0 }
  }
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'fm-cfg-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('flags over FLEETMESH_* over the config file (command section, then top level) over defaults', async () => {
    const file = join(dir, 'fleetmesh.json')
    await writeFile(file, JSON.stringify({ fleet: 'from-file', 'drain-ms': '1', json: true, node: { 'drain-ms': '2', data: '/from/file' } }))
    const env = { [envName('drain-ms')]: '3', FLEETMESH_BOOTSTRAP: '/ip4/127.0.0.1/tcp/1/p2p/a, /ip4/127.0.0.1/tcp/2/p2p/b' }
    assert.equal(envName('drain-ms'), 'FLEETMESH_DRAIN_MS')
    await runCommand(cmd, ['--config', file, '--fleet', 'from-flag'], env)
    assert.equal(seen.fleet, 'from-flag', 'flag wins')
    assert.equal(seen['drain-ms'], '3', 'environment beats the file')
    assert.equal(seen.data, '/from/file', 'command section beats top level')
    assert.equal(seen.json, true, 'top level of the file')
    assert.deepEqual(seen.bootstrap, ['/ip4/127.0.0.1/tcp/1/p2p/a', '/ip4/127.0.0.1/tcp/2/p2p/b'])
    await runCommand(cmd, [], {})
    assert.equal(seen.fleet, 'dev', 'default when nothing else says')
    await runCommand(cmd, [], { FLEETMESH_CONFIG: file })
    assert.equal(seen.fleet, 'from-file', '$FLEETMESH_CONFIG names the file')
  })

  it('a bad config file or flag is a usage error', async () => {
    const bad = join(dir, 'bad.json')
    await writeFile(bad, '{oops')
    await assert.rejects(runCommand(cmd, ['--config', bad], {}), UsageError)
    await assert.rejects(runCommand(cmd, ['--nope'], {}), UsageError)
  })
})
