// Errors every layer may throw and the entry points recognise by name.

/** A setting (a config file's field, a flag, an environment variable) that is wrong; `where` names it. */
export class ConfigError extends Error {
  readonly name = 'ConfigError'
  constructor(readonly where: string, message: string) {
    super(`${where}: ${message}`)
  }
}
