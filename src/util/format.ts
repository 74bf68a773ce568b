/** Small, locale-independent formatting helpers for what the CLI prints. */

/** 1234567 -> "1,234,567" (no locale lookup, so output is the same on every machine). */
export function grouped(n: number): string {
  const [int, frac] = String(Math.round(n * 100) / 100).split('.');
  const sign = int.startsWith('-') ? '-' : '';
  const digits = sign ? int.slice(1) : int;
  return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (frac ? `.${frac}` : '');
}

/** 1900544 -> "1.90 M": a count with an SI suffix, 3 significant digits. */
export function si(n: number): string {
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'K'],
  ];
  for (const [scale, unit] of units) if (Math.abs(n) >= scale) return `${(n / scale).toPrecision(3)} ${unit}`;
  return String(Math.round(n));
}

/** 596413 -> "582 KiB": a byte size with a binary suffix, 3 significant digits. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toPrecision(3)} ${units[i]}`;
}

/** A shape with named dynamic axes: [batch, sequence, 256]; an unknown axis is "?". */
export function shape(dims: readonly (number | string | null)[]): string {
  return `[${dims.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

/** Left-aligned columns, two spaces apart. */
export function table(rows: string[][], indent = ''): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => indent + row.map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i]) : cell)).join('  '));
}

/** A value the user wrote, for a message: quoted, one line, at most 80 characters. */
export function quoted(v: unknown): string {
  if (typeof v !== 'string') return JSON.stringify(v) ?? String(v);
  const s = JSON.stringify(v.length > 80 ? `${v.slice(0, 79)}…` : v);
  return `'${s.slice(1, -1)}'`;
}
