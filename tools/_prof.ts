import { DenseMath } from '../src/onnx/linalg';
import { main } from '../src/cli/main';
const acc = new Map<string, { n: number; ms: number }>();
for (const name of ['inverse', 'remove', 'refit', 'unitErrors', 'quadratic'] as const) {
  const orig = (DenseMath.prototype as any)[name];
  (DenseMath.prototype as any)[name] = async function (...args: any[]) {
    const t = Date.now();
    try { return await orig.apply(this, args); } finally {
      const e = acc.get(name) ?? { n: 0, ms: 0 }; e.n++; e.ms += Date.now() - t; acc.set(name, e);
    }
  };
}
const t0 = Date.now();
main(process.argv.slice(2)).then((code) => {
  console.error('exit', code, 'total', (Date.now() - t0) / 1000);
  for (const [k, v] of acc) console.error(k, v.n, (v.ms / 1000).toFixed(1));
});
