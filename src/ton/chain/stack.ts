// TVM stack items <-> toncenter v2's JSON stack format (what TonClient sends in runGetMethod and parses back).
import { Cell, type TupleItem } from '@ton/core'
import { InvalidParamsError } from './errors.ts'

function parseInt257(v: unknown, where: string): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v)
  if (typeof v === 'string') {
    const neg = v.startsWith('-')
    const body = neg ? v.slice(1) : v
    if (/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(body)) {
      const n = BigInt(body)
      return neg ? -n : n
    }
  }
  throw new InvalidParamsError(`${where}: invalid integer ${JSON.stringify(v)}`, 'stack')
}

function parseCell(v: unknown, where: string): Cell {
  const b64 = typeof v === 'string' ? v : typeof v === 'object' && v !== null && typeof (v as { bytes?: unknown }).bytes === 'string' ? (v as { bytes: string }).bytes : undefined
  if (b64 === undefined) throw new InvalidParamsError(`${where}: base64 encoded BOC expected`, 'stack')
  try {
    const roots = Cell.fromBoc(Buffer.from(b64, 'base64'))
    if (roots.length !== 1) throw new Error(`expected one root cell, got ${roots.length}`)
    return roots[0]
  } catch (err) {
    throw new InvalidParamsError(`${where}: invalid BOC: ${(err as Error).message}`, 'stack')
  }
}

/**
 * Parses the `stack` parameter: `[["num", "123" | "0x7b" | 123], ["tvm.Cell", b64], ["tvm.Slice", b64],
 * ["tvm.Builder", b64]]` (the toncenter names; "cell", "slice", "builder" and "null" are accepted too).
 */
export function parseStackParam(raw: unknown): TupleItem[] {
  if (raw === undefined || raw === null) return []
  if (!Array.isArray(raw)) throw new InvalidParamsError('stack must be an array', 'stack')
  return raw.map((entry, i): TupleItem => {
    const where = `stack[${i}]`
    if (!Array.isArray(entry) || entry.length < 1 || typeof entry[0] !== 'string') throw new InvalidParamsError(`${where}: [type, value] expected`, 'stack')
    const [type, value] = entry as [string, unknown]
    switch (type) {
      case 'num':
      case 'number':
      case 'int':
      case 'integer':
        return { type: 'int', value: parseInt257(value, where) }
      case 'tvm.Cell':
      case 'cell':
        return { type: 'cell', cell: parseCell(value, where) }
      case 'tvm.Slice':
      case 'slice':
        return { type: 'slice', cell: parseCell(value, where) }
      case 'tvm.Builder':
      case 'builder':
        return { type: 'builder', cell: parseCell(value, where) }
      case 'null':
        return { type: 'null' }
      default:
        throw new InvalidParamsError(`${where}: unsupported stack entry type ${JSON.stringify(type)}`, 'stack')
    }
  })
}

function hexInt(v: bigint): string {
  return v < 0n ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`
}

const EMPTY_LIST = { '@type': 'tvm.list', elements: [] as unknown[] }

/** One element inside a tuple, in tonlib's typed-object form (TonClient's parseStackEntry). */
function renderEntry(item: TupleItem): unknown {
  switch (item.type) {
    case 'int':
      return { '@type': 'tvm.stackEntryNumber', number: { '@type': 'tvm.numberDecimal', number: item.value.toString() } }
    case 'cell':
    case 'builder':
      return { '@type': 'tvm.stackEntryCell', cell: { '@type': 'tvm.cell', bytes: item.cell.toBoc().toString('base64') } }
    case 'slice':
      return { '@type': 'tvm.stackEntrySlice', slice: { '@type': 'tvm.slice', bytes: item.cell.toBoc().toString('base64') } }
    case 'tuple':
      return { '@type': 'tvm.stackEntryTuple', tuple: { '@type': 'tvm.tuple', elements: item.items.map(renderEntry) } }
    case 'null':
      // tonlib has no null entry; it renders null as an empty list
      return { '@type': 'tvm.stackEntryList', list: EMPTY_LIST }
    default:
      return { '@type': 'tvm.stackEntryUnsupported' }
  }
}

/**
 * Renders a result stack the way toncenter does: `["num", "0x.."]` (hex, "-0x.." when negative),
 * `["cell", {bytes}]` for cells and slices, `["builder", {bytes}]`, `["tuple", {"@type": "tvm.tuple",
 * elements}]`, and null as an empty `["list", ...]` (TonClient reads an empty tuple or list as null).
 */
export function renderStack(items: TupleItem[]): unknown[] {
  return items.map((item): unknown => {
    switch (item.type) {
      case 'int':
        return ['num', hexInt(item.value)]
      case 'nan':
        return ['num', 'NaN']
      case 'cell':
      case 'slice':
        return ['cell', { bytes: item.cell.toBoc().toString('base64') }]
      case 'builder':
        return ['builder', { bytes: item.cell.toBoc().toString('base64') }]
      case 'tuple':
        return ['tuple', { '@type': 'tvm.tuple', elements: item.items.map(renderEntry) }]
      case 'null':
        return ['list', EMPTY_LIST]
    }
  })
}
