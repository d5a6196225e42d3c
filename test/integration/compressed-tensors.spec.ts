/**
 * Tensors compressed between peers where it pays (protocols/compression.ts,
 * infer 2.2.0): a job's input reaches the first vehicle in a few KB, only a
 * peer that reads compressed tensors gets them, results stay the whole
 * model's bit for bit, and a member that sends a tensor inflating past its
 * dims gets BAD_INPUT from a vehicle that goes on serving. Real libp2p
 * nodes, real onnxruntime.
 */
import assert from 'node:assert/strict'
import { zstdCompressSync } from 'node:zlib'
import { Uint8ArrayList } from 'uint8arraylist'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { FleetClient } from '../../node/client/client.ts'
import { JobLedger } from '../../node/client/ledger.ts'
import { digestOf } from '../../node/runtime/attest.ts'
import { COMPRESS_MAX_RATIO } from '../../protocols/compression.ts'
import { textOf } from '../../node/client/inputs.ts'
import { runSession } from '../../node/models/ort.ts'
import { frameStream, frameTensors } from '../../protocols/framing.ts'
import { TensorEncoding } from '../../protocols/gen/tensor_pb.ts'
import { INFER_COMPRESSED_PROTOCOL, INFER_PROTOCOL } from '../../protocols/ids.ts'
import { InferErrorCode } from '../../protocols/infer.ts'
import type { InferRequest } from '../../protocols/infer.ts'
import { sealReceipt } from '../../protocols/receipt.ts'
import { describeTensors, float32Tensor, sameTensor } from '../../protocols/tensor.ts'
import type { TensorDescriptor } from '../../protocols/tensor.ts'
import { testNode } from '../utils/node.ts'
import { startRogue } from '../utils/rogue.ts'
import { sampleLine, recMesh } from '../utils/samples.ts'
import { SETTLE_MS } from '../utils/until.ts'

describe('tensors compressed between peers where it pays', function () {
  this.timeout(120_000)
  // everything here is on one host, where `auto` never compresses: `always`, as over links not measured yet
  const rec = recMesh(2, [[0], [1]], { mesh: { verify: 'off', compress: 'always' } })

  /** What a rogue holding stage 0 on `protocol` receives from `client` (it refuses the run, the honest vehicles do the job). */
  const firstHopSees = async (client: FleetClient, protocol: string, file: string): Promise<TensorDescriptor> => {
    const seen: TensorDescriptor[][] = []
    const rogue = await startRogue(rec.mesh, async (fs, frame) => {
      seen.push(frame.tensors)
      await fs.write({ kind: 'error', error: { job: frame.message.request.job, code: InferErrorCode.RUN_FAILED, message: 'not today', stage: 0, peer: '', receipts: [] } }, [])
    }, protocol)
    try {
      rogue.claim(rec.sharded.manifestCid, [0])
      if (client !== rec.mesh.client) client.directory.record(rogue.peer, rec.mesh.client.directory.get(rogue.peer)!.heartbeat)
      const x = sampleLine(file)
      const r = await client.infer(rec.model(), [x], { prefer: new Set([rogue.peer, rec.mesh.vehicles[1].peerId]) })
      assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get(file), 'the job completed on the honest vehicles')
      assert.ok(sameTensor((await runSession(rec.whole, [x]))[0], r.outputs[0]), 'the whole model\'s result, bit for bit')
      assert.equal(seen.length, 1, 'the rogue was asked first')
      return seen[0][0]
    } finally {
      client.directory.forget(rogue.peer)
      await rogue.stop()
    }
  }

  it('a job\'s input reaches a first hop that reads compressed tensors in a few KB; the result is the whole model\'s', async () => {
    const d = await firstHopSees(rec.mesh.client, INFER_COMPRESSED_PROTOCOL, '05.png')
    assert.equal(d.encoding, TensorEncoding.ZSTD)
    assert.ok(d.encodedLength < 184_320 / 20, `${d.encodedLength} bytes for 184,320`)
  })

  it('a peer of an earlier version, a client with compression off, or on auto to a peer on its own host gets the raw bytes', async () => {
    const old = await firstHopSees(rec.mesh.client, INFER_PROTOCOL, '06.png')
    assert.deepEqual([old.encoding, old.encodedLength], [TensorEncoding.RAW, 184_320])
    for (const compress of ['off', 'auto'] as const) {
      const plain = await FleetClient.connect({ bootstrap: rec.mesh.bootAddrs, fleet: 'test', credentials: await rec.mesh.fleet!.client(), verify: 'off', compress })
      try {
        await plain.directory.waitFor(() => plain.directory.holders(rec.sharded.manifestCid, 1).length > 0, { signal: AbortSignal.timeout(SETTLE_MS), what: 'stage 1 served' })
        const d = await firstHopSees(plain, INFER_COMPRESSED_PROTOCOL, '07.png')
        assert.deepEqual([d.encoding, d.encodedLength], [TensorEncoding.RAW, 184_320], compress)
      } finally { await plain.close() }
    }
  })

  it('a vehicle compresses its hand-off to a next hop it has measured a slow link to, not to one not measured yet', async () => {
    /** The first request a rogue holding stage 1 gets: vehicle 0's hand-off (a replay from the client may follow). */
    const handOffSeen = async (slow: boolean, file: string): Promise<TensorDescriptor | undefined> => {
      const seen: TensorDescriptor[] = []
      const rogue = await startRogue(rec.mesh, async (fs, frame) => {
        seen.push(frame.tensors[0])
        await fs.write({ kind: 'error', error: { job: frame.message.request.job, code: InferErrorCode.RUN_FAILED, message: 'not today', stage: 1, peer: '', receipts: [] } }, [])
      }, INFER_COMPRESSED_PROTOCOL)
      try {
        rogue.claim(rec.sharded.manifestCid, [1])
        // 2.5 MB/s (20 Mbit/s), as a shard fetched from that peer would have measured
        if (slow) rec.mesh.vehicles[0].links.observeTransfer(rogue.peer, 2_500_000, 1000)
        const r = await rec.mesh.client.infer(rec.model(), [sampleLine(file)], { prefer: new Set([rec.mesh.vehicles[0].peerId, rogue.peer]) })
        assert.equal(textOf(rec.sharded.manifest, r.outputs)?.text, rec.labels.get(file))
        return seen[0]
      } finally {
        rec.mesh.client.directory.forget(rogue.peer)
        await rogue.stop()
      }
    }
    const raw = rec.sharded.manifest.stages[0].handOffBytes
    const unmeasured = await handOffSeen(false, '09.png')
    assert.deepEqual([unmeasured?.encoding, unmeasured?.encodedLength], [TensorEncoding.RAW, raw], 'an activation does not shrink to a quarter')
    const slow = await handOffSeen(true, '10.png')
    assert.equal(slow?.encoding, TensorEncoding.ZSTD)
    assert.ok(slow.encodedLength < raw * 0.9, `${slow.encodedLength} of ${raw} bytes`)
  })

  it('a member\'s tensor that inflates past its dims gets BAD_INPUT; a compressed input sent straight to a vehicle runs right', async () => {
    const { host } = await testNode({ bootstrap: rec.mesh.bootAddrs, credentials: await rec.mesh.fleet!.client() })
    try {
      await host.dial(rec.mesh.vehicles[0].host.getMultiaddrs())
      const x = sampleLine('08.png')
      const request = (job: string): InferRequest => ({ job, manifest: rec.sharded.manifestCid, stage: 0, deadline: Date.now() + 30_000, route: [{ peer: rec.mesh.vehicles[1].peerId, addrs: [] }] })
      const fs = frameStream(await host.dialProtocol(rec.mesh.vehicles[0].host.peerId, INFER_COMPRESSED_PROTOCOL))
      // 8 MiB of zeros in a few hundred bytes, under a descriptor that claims x's dims (184,320 bytes)
      const bomb = zstdCompressSync(new Uint8Array(8 << 20))
      const descriptor: TensorDescriptor = { name: 'x', dtype: 1, dims: x.dims, encoding: TensorEncoding.ZSTD, encodedLength: bomb.byteLength }
      await fs.relay({ kind: 'request', request: request('bomb') }, { tensors: [descriptor], taps: [], payload: new Uint8ArrayList(bomb) })
      const refused = await fs.read({ signal: AbortSignal.timeout(10_000) })
      assert.equal(refused.message.kind === 'error' && refused.message.error.code, InferErrorCode.BAD_INPUT)
      assert.match(refused.message.kind === 'error' ? refused.message.error.message : '', /tensor x: decompresses to more than the 184320 bytes/)
      // the same stream, an honest compressed input: the vehicle runs it and the next one answers
      await fs.write({ kind: 'request', request: request('fine') }, [x], { compress: COMPRESS_MAX_RATIO })
      const answer = await fs.read({ signal: AbortSignal.timeout(30_000) })
      assert.equal(answer.message.kind, 'result')
      assert.ok(sameTensor((await runSession(rec.whole, [x]))[0], frameTensors(answer)[0]), 'the whole model\'s result')
    } finally { await host.stop() }
  })
})

describe('a compressed tensor in an answer that does not decode', () => {
  it('is the answer\'s problem (the client bans and re-routes), not an exception that ends the job', async () => {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const inputs = [float32Tensor('x', [1, 64], new Float32Array(64).fill(1))]
    const out0 = float32Tensor('h', [1, 16_384], new Float32Array(16_384).fill(2))
    const out1 = float32Tensor('y', [1, 8], new Float32Array(8).fill(3))
    const seal = async (stage: number, input: Uint8Array, output: Uint8Array): Promise<Uint8Array> => await sealReceipt({ job: 'j', manifest: 'm', stage, input, output, ms: 1 }, key)
    const receipts = [await seal(0, digestOf(inputs), digestOf([out0])), await seal(1, digestOf([out0]), digestOf([out1]))]
    // stage 0's tap (asked for a check) claims 64 KB but inflates to 8 MiB
    const bomb = zstdCompressSync(new Uint8Array(8 << 20))
    const main = describeTensors([out1]).descriptors[0]
    const tap: TensorDescriptor = { name: 'h', dtype: main.dtype, dims: out0.dims, encoding: TensorEncoding.ZSTD, encodedLength: bomb.byteLength }
    const answer = { message: { kind: 'result' as const, result: { job: 'j', receipts } }, tensors: [main, tap], taps: [{ stage: 0, count: 1 }], payload: new Uint8ArrayList(out1.data, bomb) }
    const problem = await new JobLedger('j', 'm', 2, inputs).accept(answer, 0, inputs, [peer, peer], [0])
    assert.match(problem ?? '', /tensor h: decompresses to more than the 65536 bytes/)
  })
})
