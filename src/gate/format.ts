import { bytes as formatBytes, si } from '../util/format';
import type { MetricName } from '../eval/metric-names';
import { METRICS } from './metrics';

/** `n` to `digits` significant digits, without trailing zeros; very large or small in exponent form. */
function sig(n: number, digits = 4): string {
  if (!Number.isFinite(n)) return '–';
  if (n === 0) return '0';
  const abs = Math.abs(n);
  if (abs >= 1e4 || abs < 1e-3) return n.toPrecision(3);
  return String(Number(n.toPrecision(digits)));
}

/** A metric's value in its unit, for the report, annotations and progress lines. */
export function formatValue(name: MetricName, v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '–';
  switch (METRICS[name].unit) {
    case 'fraction':
      return `${(v * 100).toFixed(2)} %`;
    case 'ms':
      return `${v >= 100 ? v.toFixed(0) : v.toPrecision(3)} ms`;
    case 'tokens/s':
      return `${v >= 100 ? v.toFixed(0) : v.toPrecision(3)} tokens/s`;
    case 'bytes':
      return formatBytes(v);
    case 'count':
      return si(v);
    case 'MiB':
      return `${v >= 100 ? v.toFixed(0) : v.toPrecision(3)} MiB`;
    default:
      return sig(v);
  }
}

