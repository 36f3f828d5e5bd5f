// Preload: CPU-profile this process (inspector) and write DIR/<role>-<pid>.cpuprofile at exit.
import inspector from 'node:inspector'
import fs from 'node:fs'
const dir = process.env.PROBE_PROF_DIR
const role = process.argv.slice(2).find((a) => ['worker', 'client', 'proxy'].includes(a))
if (dir && role) {
  const s = new inspector.Session()
  s.connect()
  s.post('Profiler.enable')
  s.post('Profiler.setSamplingInterval', { interval: 200 })
  s.post('Profiler.start')
  let done = false
  const write = () => {
    if (done) return
    done = true
    s.post('Profiler.stop', (err, r) => {
      if (!err) { fs.mkdirSync(dir, { recursive: true }); fs.writeFileSync(`${dir}/${role}-${process.pid}.cpuprofile`, JSON.stringify(r.profile)) }
    })
  }
  process.on('exit', write)
  process.prependListener('SIGTERM', write)
}
