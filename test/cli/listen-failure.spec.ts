import assert from 'node:assert/strict'
import net from 'node:net'
import { failureMessage } from '../../node/cli/format.ts'
import { createHost } from '../../node/host.ts'

// `fleetmesh bootstrap` / `node` on a port another process holds: one line naming the address and what to do
describe('a node that cannot listen', () => {
  let server: net.Server
  let port: number
  before(async () => {
    server = net.createServer()
    port = await new Promise<number>(resolve => { server.listen(0, '127.0.0.1', () => { resolve((server.address() as net.AddressInfo).port) }) })
  })
  after(async () => { await new Promise(resolve => server.close(resolve)) })

  it('says which address is taken, not libp2p\'s message and stack', async () => {
    const err = await createHost({ listen: [`/ip4/127.0.0.1/tcp/${port}`] }).then(async h => { await h.stop(); return undefined }, (e: Error) => e)
    assert.ok(err !== undefined, 'the port was free')
    assert.equal(failureMessage(err), `cannot listen on /ip4/127.0.0.1/tcp/${port}: another process listens there (--listen picks another address or port)`)
    assert.equal(failureMessage(new Error('something else')), 'something else')
  })
})
