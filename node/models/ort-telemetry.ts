/**
 * onnxruntime's own telemetry, off unless the operator turns it on.
 *
 * onnxruntime-node 1.30's Linux library carries Microsoft's 1DS telemetry,
 * on by default: from the first session on, every process that loads it
 * keeps a device id and an SQLite queue of events (session creations, model
 * loads, run counts and times, system metrics) under
 * ~/.cache/Microsoft/DeveloperTools/.onnxruntime, writes a log file
 * /tmp/mat-debug-<pid>.log, and uploads the queue to
 * mobile.events.data.microsoft.com when it can. A vehicle must not send
 * what it runs to a third party over its metered link, nor fill its disk
 * with a queue nobody reads; the operator's own telemetry is fleetmesh's
 * (README, "Metrics"). The library reads ORT_DISABLE_TELEMETRY from the
 * environment when it starts, so this sets it, unless the operator set it
 * (`ORT_DISABLE_TELEMETRY=0` turns it back on), before onnxruntime-node is
 * imported: node/models/ort.ts imports this module first.
 */
export const ORT_TELEMETRY_ENV = 'ORT_DISABLE_TELEMETRY'

if (process.env[ORT_TELEMETRY_ENV] === undefined) process.env[ORT_TELEMETRY_ENV] = '1'
