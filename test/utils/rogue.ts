/**
 * Hostile fleet members for tests: a node with a real vehicle certificate
 * that answers infer requests however the test says, and claims stages in
 * the client's directory as an honest vehicle's heartbeat would.
 */
import type { Stream } from '@libp2p/interface'
import { frameStream } from '../../protocols/framing.ts'
import type { Frame, FrameStream } from '../../protocols/framing.ts'
import { INFER_PROTOCOL } from '../../protocols/ids.ts'
import type { InferRequest } from '../../protocols/infer.ts'
import { sealReceipt } from '../../protocols/receipt.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { digestOf } from '../../node/runtime/attest.ts'
import type { Host } from '../../node/host.ts'
import type { NodeComponents } from '../../node/components.ts'
import type { TestMesh } from './mesh.ts'
import { testNode } from './node.ts'

export interface Rogue {
  host: Host
  components: NodeComponents
  peer: string
  /** Requests it received. */
  requests: InferRequest[]
  /** Claims `stages` of `manifest` in the client's directory, fast and idle. */
  claim: (manifest: string, stages: number[], msPerItem?: number) => void
  /** Signs a receipt as this rogue. */
  receipt: (req: InferRequest, stage: number, input: Tensor[], output: Tensor[]) => Promise<Uint8Array>
  stop: () => Promise<void>
}

export type RogueBehaviour = (fs: FrameStream, frame: Frame & { message: { kind: 'request' } }, rogue: Rogue) => Promise<void>

/**
 * A fleet member with the vehicle role, connected to the mesh's client and
 * vehicles, answering infer requests with `behaviour` on `protocol` (the
 * first infer version by default).
 */
export async function startRogue (mesh: TestMesh, behaviour: RogueBehaviour, protocol = INFER_PROTOCOL): Promise<Rogue> {
  const { host, components } = await testNode({ bootstrap: mesh.bootAddrs, credentials: await mesh.fleet!.client(['vehicle']) })
  const rogue: Rogue = {
    host,
    components,
    peer: host.peerId.toString(),
    requests: [],
    claim (manifest, stages, msPerItem = 0.01) {
      const honest = mesh.client.directory.all()[0].heartbeat
      mesh.client.directory.record(rogue.peer, {
        ...honest,
        ts: Date.now() + 3_600_000,
        seq: 1e9,
        load: 0,
        eligible: true,
        addrs: host.getMultiaddrs().map(a => a.toString()),
        stages: stages.map(stage => ({ manifest, stage, cid: `rogue-${stage}`, msPerItem }))
      })
    },
    async receipt (req, stage, input, output) {
      return await sealReceipt({ job: req.job, manifest: req.manifest, stage, input: digestOf(input), output: digestOf(output), ms: 1 }, components.privateKey)
    },
    async stop () {
      mesh.client.directory.forget(rogue.peer)
      await host.stop()
    }
  }
  await host.handle(protocol, async (stream: Stream) => {
    const fs = frameStream(stream)
    try {
      const frame = await fs.read()
      if (frame.message.kind !== 'request') return
      rogue.requests.push(frame.message.request)
      await behaviour(fs, frame as Frame & { message: { kind: 'request' } }, rogue)
      await stream.close()
    } catch (err) { stream.abort(err as Error) }
  })
  // known (proved membership) to the client and every vehicle
  await Promise.all([mesh.client.host, ...mesh.vehicles.map(v => v.host)].filter(h => h.status === 'started').map(async h => await host.dial(h.getMultiaddrs()).catch(() => {})))
  await new Promise(resolve => setTimeout(resolve, 300))
  return rogue
}
