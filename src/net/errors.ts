// Error classes with one meaning each, and the single function that turns any error into an OpenAI-style response.
import { BackendError } from '../inference/index.ts'
import { EvidenceRefusedError } from '../tee/index.ts'

/** Longest piece of app input echoed back in an error message. */
export const MAX_ECHO_CHARS = 256

export class InvalidRequestError extends Error {
  readonly name = 'InvalidRequestError'
  constructor(message: string, readonly param: string | null = null) {
    super(message)
  }
}

export class ModelNotFoundError extends Error {
  readonly name = 'ModelNotFoundError'
  constructor(readonly model: string) {
    // The name comes from the app: echo a bounded prefix, never megabytes of it.
    super(`The model '${model.length > MAX_ECHO_CHARS ? model.slice(0, MAX_ECHO_CHARS) + '…' : model}' does not exist or no worker serves it`)
  }
}

export class PayloadTooLargeError extends Error {
  readonly name = 'PayloadTooLargeError'
  constructor(readonly limitBytes: number) {
    super(`request body exceeds the limit of ${limitBytes} bytes`)
  }
}

export class NoWorkerAvailableError extends Error {
  readonly name = 'NoWorkerAvailableError'
  constructor(
    message: string,
    /** Seconds after which a retry may succeed (sent as Retry-After), if known. */
    readonly retryAfterSec?: number,
  ) {
    super(message)
  }
}

/** No worker of the model is connected, but one left lately (restarting, or its link dropped): the same 503, marked so a retry loop can tell it apart. */
export class ModelRestartingError extends NoWorkerAvailableError {}

export class NoProxyAvailableError extends Error {
  readonly name = 'NoProxyAvailableError'
  constructor(message = 'no attested proxy is connected') {
    super(message)
  }
}

export class RequestTimeoutError extends Error {
  readonly name = 'RequestTimeoutError'
  constructor(readonly timeoutMs: number) {
    super(`request timed out after ${timeoutMs} ms`)
  }
}

export class RouteNotFoundError extends Error {
  readonly name = 'RouteNotFoundError'
  constructor(readonly method: string, readonly path: string) {
    super(`unknown endpoint ${method.slice(0, 16)} ${path.length > MAX_ECHO_CHARS ? path.slice(0, MAX_ECHO_CHARS) + '…' : path}`)
  }
}

/** A known path asked with a method it does not take (405, with the methods it does take in Allow). */
export class MethodNotAllowedError extends Error {
  readonly name = 'MethodNotAllowedError'
  constructor(readonly method: string, readonly path: string, readonly allow: readonly string[]) {
    super(`${path.length > MAX_ECHO_CHARS ? path.slice(0, MAX_ECHO_CHARS) + '…' : path} takes ${allow.join(' or ')}, not ${method.slice(0, 16)}`)
  }
}

/** The request cannot be done in the current state of what it names (409), e.g. closing a channel there is none of. */
export class ConflictError extends Error {
  readonly name = 'ConflictError'
  constructor(message: string, readonly code = 'conflict') {
    super(message)
  }
}

/** A worker at its limit of running requests (503: the proxy tries another worker). */
export class WorkerBusyError extends Error {
  readonly name = 'WorkerBusyError'
  constructor(readonly maxActiveRequests: number) {
    super(`worker is at its limit of ${maxActiveRequests} active requests`)
  }
}

/** The request was stopped by whoever sent it before its answer was ready (499, as nginx names it). */
export class RequestCancelledError extends Error {
  readonly name = 'RequestCancelledError'
  constructor(message = 'the request was cancelled') {
    super(message)
  }
}

/** A receipt this node does not hold (404). */
export class ReceiptNotFoundError extends Error {
  readonly name = 'ReceiptNotFoundError'
  constructor(readonly id: string) {
    super(`no receipt ${id.slice(0, 64)} on this node`)
  }
}

export class UpstreamError extends Error {
  readonly name = 'UpstreamError'
  constructor(message: string) {
    super(message)
  }
}

export class TooManyRequestsError extends Error {
  readonly name = 'TooManyRequestsError'
  constructor(
    message: string,
    /** Seconds after which a retry may succeed (sent as Retry-After), if known. */
    readonly retryAfterSec?: number,
  ) {
    super(message)
  }
}

/** The client has no funds with this proxy: only metadata calls (e.g. GET /v1/models) are served. */
export class UnfundedClientError extends Error {
  readonly name = 'UnfundedClientError'
  constructor() {
    super('this client has no funds with this proxy: only metadata calls such as GET /v1/models are served; deposit to your client contract to run requests')
  }
}

/** The OpenAI error envelope. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; code: string | null; param: string | null }
}

export interface ErrorResponse {
  status: number
  body: OpenAIErrorBody
}

/** Is this error something we expected (a client or peer problem), as opposed to a bug? */
export function isExpectedError(err: unknown): boolean {
  return errorResponse(err).status !== 500 || (err instanceof Error && err.name === 'BackendError')
}

/**
 * The one place errors become responses. Unknown errors become a 500 that leaks nothing;
 * the caller logs them.
 */
export function errorResponse(err: unknown): ErrorResponse {
  const e = err as Error & { param?: string | null; status?: number }
  const make = (status: number, type: string, code: string | null, message: string, param: string | null = null): ErrorResponse => ({
    status,
    body: { error: { message, type, code, param } },
  })
  switch (e?.name) {
    case 'InvalidRequestError':
      return make(400, 'invalid_request_error', 'invalid_request', e.message, e.param ?? null)
    case 'ModelNotFoundError':
      return make(404, 'invalid_request_error', 'model_not_found', e.message, 'model')
    case 'PayloadTooLargeError':
      return make(413, 'invalid_request_error', 'request_too_large', e.message)
    case 'RouteNotFoundError':
    case 'ReceiptNotFoundError':
      return make(404, 'invalid_request_error', 'not_found', e.message)
    case 'MethodNotAllowedError':
      return make(405, 'invalid_request_error', 'method_not_allowed', e.message)
    case 'ConflictError':
      return make(409, 'invalid_request_error', (e as ConflictError).code, e.message)
    case 'RequestsInFlightError':
      return make(409, 'invalid_request_error', 'requests_in_flight', e.message)
    case 'RequestCancelledError':
      return make(499, 'invalid_request_error', 'request_cancelled', e.message)
    case 'WorkerBusyError':
      return make(503, 'service_unavailable', 'worker_busy', e.message)
    case 'NoWorkerAvailableError':
      return make(503, 'service_unavailable', 'no_worker_available', e.message)
    case 'NoProxyAvailableError':
      return make(503, 'service_unavailable', 'no_proxy_available', e.message)
    case 'TooManyRequestsError':
      return make(429, 'rate_limit_error', 'too_many_requests', e.message)
    case 'InvalidApiKeyError':
      return make(401, 'invalid_request_error', 'invalid_api_key', e.message)
    case 'ApiKeyQuotaError':
      return make(429, 'insufficient_quota', 'insufficient_quota', e.message)
    case 'ModelNotAllowedError':
      return make(403, 'permission_error', 'model_not_allowed', e.message, 'model')
    case 'DuplicateRequestError':
      return make(409, 'invalid_request_error', 'duplicate_request_id', e.message, 'request_id')
    case 'UnfundedClientError':
    case 'InsufficientQuotaError':
      return make(402, 'insufficient_quota', 'insufficient_quota', e.message)
    case 'ChainUnavailableError':
      return make(503, 'service_unavailable', 'chain_unavailable', e.message)
    case 'ProxyNotServingError':
      return make(503, 'service_unavailable', 'proxy_not_serving', e.message)
    case 'RequestTimeoutError':
      return make(504, 'timeout_error', 'timeout', e.message)
    case 'UpstreamError':
      return make(502, 'api_error', 'upstream_error', e.message)
    case 'E2eeError':
      // A request that does not open at its worker (or an answer that fails its integrity check): another recipient may do better.
      return make(502, 'api_error', 'e2ee_failed', e.message)
    case 'EvidenceRefusedError':
      return make(502, 'api_error', 'evidence_refused', (e as EvidenceRefusedError).message)
    case 'BackendError': {
      const status = (e as BackendError).status ?? 502
      return make(status, status < 500 ? 'invalid_request_error' : 'api_error', status < 500 ? 'invalid_request' : 'backend_error', e.message)
    }
    default:
      return make(500, 'api_error', 'internal_error', 'internal error')
  }
}
