// A node started by a supervisor (`cocoon devnet`) stops itself when the supervisor goes away, however it went.

/** Set by the supervisor in each child's environment; the child's stdin is then a pipe from the supervisor. */
export const SUPERVISED_ENV = 'COCOON_SUPERVISED'

/**
 * When supervised, sends this process SIGTERM (its usual graceful stop) once stdin reaches
 * EOF: the supervisor exited, even by SIGKILL, so nothing is left running without it.
 */
export function stopWithSupervisor(env: NodeJS.ProcessEnv = process.env): void {
  if (env[SUPERVISED_ENV] !== '1') return
  const stdin = process.stdin
  const gone = () => {
    // Our stdout and stderr were pipes to the supervisor too: writing to them now fails, and must not stop the graceful shutdown.
    process.stdout.on('error', () => {})
    process.stderr.on('error', () => {})
    process.kill(process.pid, 'SIGTERM')
  }
  stdin.once('end', gone)
  stdin.once('error', gone)
  stdin.resume()
  // Watching stdin must not by itself keep a stopped node alive.
  ;(stdin as unknown as { unref?: () => void }).unref?.()
}
