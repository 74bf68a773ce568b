// Prune-gate.yml is validated; a wrong key, type, value or missing file names itself.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { applyOverrides, loadConfig, parseConfig, parseGate, parseOverrides, resolveConfig } from '../src/config/config';
import { UserError } from '../src/errors';

let tmp: string;
let cwd: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-config-'));
  cwd = process.cwd();
  process.chdir(tmp);
  fs.mkdirSync('models');
  fs.writeFileSync('models/m.onnx', 'x');
  fs.mkdirSync('calib');
});
afterAll(() => {
  process.chdir(cwd);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function configError(text: string, file = 'prune-gate.yml'): string {
  try {
    parseConfig(text, path.resolve(file));
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected the config to be refused');
}

const VALID = `
model: models/m.onnx
calibration: calib
prune:
  target: auto
  max-target: 0.6
  structures: [ffn, heads]
  importance: magnitude
  compensate: none
  steps: 3
quantize: none
gate:
  accuracy: { max-drop: 0.01 }
  perplexity: { max-increase: 5% }
  agreement: { min: 0.97 }
  latency-p50: { min-speedup: 1.2 }
  size: { max-ratio: 0.5 }
latency: { warmup: 2, time: 30s, noise: 2%, on-inconclusive: pass }
`;

test('the example of docs/contracts.md parses, with paths relative to the config file', () => {
  fs.mkdirSync('sub', { recursive: true });
  fs.writeFileSync('sub/prune-gate.yml', VALID.replace('models/m.onnx', '../models/m.onnx').replace('calibration: calib\n', 'calibration: ../calib\n'));
  const c = loadConfig('sub/prune-gate.yml');
  expect(c.model).toBe(path.resolve('models/m.onnx'));
  expect(c.calibration).toBe(path.resolve('calib'));
  expect(c.prune).toEqual({ target: 'auto', maxTarget: 0.6, structures: ['ffn', 'heads'], importance: 'magnitude', compensate: 'none', allocation: 'auto', steps: 3, align: 'auto' });
  expect(c.latency).toEqual({ warmup: 2, time: 30, noise: 0.02, onInconclusive: 'pass' });
  expect(c.gate.map((r) => r.text)).toEqual(['max-drop 0.01', 'max-increase 5%', 'min 0.97', 'min-speedup 1.2', 'max-ratio 0.5']);
  expect(c.gate[1]).toMatchObject({ metric: 'perplexity', bound: 'max-increase', value: 5, percent: true });
});

test('defaults for what is left out', () => {
  const c = parseConfig('model: models/m.onnx\n', path.resolve('prune-gate.yml'));
  expect(c.prune).toMatchObject({ target: 'auto', maxTarget: 0.5, steps: 5, importance: 'activation', compensate: 'auto', allocation: 'auto' });
  expect(c.quantize).toBe('none');
  expect(c.keepNames).toBe(false);
  expect(c.externalData).toBe('auto');
  expect(c.device).toEqual({ threads: undefined, memory: os.totalmem() });
  const memory = (bound: string) => parseConfig(`model: models/m.onnx\ngate:\n  memory: { ${bound} }\n`, path.resolve('prune-gate.yml')).gate[0];
  expect(memory('max: 512 MiB')).toMatchObject({ value: 512, text: 'max 512 MiB' });
  expect(memory('max: 1.5 GiB')).toMatchObject({ value: 1536, text: 'max 1.5 GiB' });
  expect(memory('max: 300')).toMatchObject({ value: 300, text: 'max 300 MiB' });
  expect(memory('max-ratio: 0.8')).toMatchObject({ bound: 'max-ratio', value: 0.8 });
  expect(parseConfig('model: models/m.onnx\ndevice: { threads: 2 }\n', path.resolve('prune-gate.yml')).device).toEqual({ threads: 2, memory: os.totalmem() });
  const memoryOf = (size: string) => parseConfig(`model: models/m.onnx\ndevice: { memory: ${size} }\n`, path.resolve('prune-gate.yml')).device.memory;
  expect(memoryOf('16GB')).toBe(16e9);
  expect(memoryOf('12 GiB')).toBe(12 * 2 ** 30);
  expect(memoryOf('1.5GiB')).toBe(1.5 * 2 ** 30);
  expect(memoryOf('512MiB')).toBe(512 * 2 ** 20);
  expect(c.gate).toEqual([]);
  expect(parseConfig('model: models/m.onnx\nexternal-data: never\n', path.resolve('prune-gate.yml')).externalData).toBe('never');
  expect(c.budget).toBe(600);
});

test('latency: timed by time (10 s at most, 3 % noise, inconclusive fails by default); runs, when given, caps the runs', () => {
  const latency = (yml: string) => parseConfig(`latency: ${yml}\n`, path.resolve('prune-gate.yml')).latency;
  expect(parseConfig('model: models/m.onnx\n', path.resolve('prune-gate.yml')).latency).toEqual({ warmup: 3, time: 10, noise: 0.03, onInconclusive: 'fail' });
  expect(latency('{ time: 1m, noise: 0, runs: 200 }')).toEqual({ warmup: 3, time: 60, noise: 0, runs: 200, onInconclusive: 'fail' });
  expect(latency('{ time: 2.5, noise: 0.05 }')).toMatchObject({ time: 2.5, noise: 0.05 });
  expect(configError('latency: { time: soon }\n')).toBe("prune-gate.yml: latency.time: expected the most time timing one candidate may take, such as 10s or 1m (a plain number is seconds), found 'soon'");
  expect(configError('latency: { noise: 60% }\n')).toBe("prune-gate.yml: latency.noise: expected how far repeated measurements differ, as a share such as 3% or 0.03 (0 to 50%), found '60%'");
  expect(configError('latency: { on-inconclusive: retry }\n')).toBe("prune-gate.yml: latency.on-inconclusive: 'retry' is not one of fail, pass");
  expect(configError('latency: { tme: 5s }\n')).toBe('prune-gate.yml: latency.tme: unknown key (did you mean time?)');
});

test('the budget takes the usual duration forms, a plain number being seconds', () => {
  const budget = (value: string) => parseConfig(`budget: ${value}\n`, path.resolve('prune-gate.yml')).budget;
  expect([budget('90s'), budget('10m'), budget('1h30m'), budget('1h 5s'), budget('2.5m'), budget('45'), budget('"45"')]).toEqual([90, 600, 5400, 3605, 150, 45, 45]);
  expect(configError('budget: ten minutes\n')).toBe("prune-gate.yml: budget: expected a duration such as 90s, 10m or 1h30m (a plain number is seconds), found 'ten minutes'");
  expect(configError('budget: 0\n')).toBe('prune-gate.yml: budget: expected a duration such as 90s, 10m or 1h30m (a plain number is seconds), found 0');
  expect(parseOverrides({ budget: '5m' }, (k) => `--${k}`).budget).toBe(300);
  expect(() => parseOverrides({ budget: '5 minutes' }, (k) => `--${k}`)).toThrow("--budget: expected a duration such as 90s, 10m or 1h30m (a plain number is seconds), found '5 minutes'");
});

describe('mistakes name themselves', () => {
  test('an unknown key, with its path and a suggestion', () => {
    expect(configError('prune:\n  targt: 0.3\n')).toBe('prune-gate.yml: prune.targt: unknown key (did you mean target?)');
    expect(configError('modle: m.onnx\n')).toBe('prune-gate.yml: modle: unknown key (did you mean model?)');
    expect(configError('prune:\n  zzzzzz: 1\n')).toBe('prune-gate.yml: prune.zzzzzz: unknown key');
  });

  test('a wrong type or value', () => {
    expect(configError('prune:\n  steps: five\n')).toBe("prune-gate.yml: prune.steps: expected a whole number of steps >= 1, found 'five'");
    expect(configError('prune:\n  steps: 2.5\n')).toBe('prune-gate.yml: prune.steps: expected a whole number of steps >= 1, found 2.5');
    expect(configError('prune:\n  target: 1.5\n')).toBe('prune-gate.yml: prune.target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found 1.5');
    expect(configError('prune:\n  target: most\n')).toBe("prune-gate.yml: prune.target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found 'most'");
    expect(configError('prune:\n  target: [0.3]\n')).toBe('prune-gate.yml: prune.target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found [0.3]');
    expect(configError('quantize: int3\n')).toBe("prune-gate.yml: quantize: 'int3' is not one of none, int8, int4");
    expect(configError('keep-names: sometimes\n')).toBe("prune-gate.yml: keep-names: expected true or false, found 'sometimes'");
    expect(configError('external-data: yes\n')).toBe("prune-gate.yml: external-data: 'yes' is not one of auto, always, never");
    expect(configError('gate:\n  memory: { max: 2 GB }\n')).toBe('prune-gate.yml: gate.memory.max: expected an amount of memory such as 512 MiB or 1 GiB (a plain number is MiB), found "2 GB"');
    expect(configError('device: { threads: 0 }\n')).toBe('prune-gate.yml: device.threads: a whole number of threads >= 1 (found 0)');
    expect(configError('device: { memory: 16 }\n')).toBe('prune-gate.yml: device.memory: a memory size with its unit, e.g. 16GB or 12GiB (KB, MB, GB, TB, KiB, MiB, GiB, TiB), found 16');
    expect(configError('device: { memory: 16 gigs }\n')).toBe("prune-gate.yml: device.memory: a memory size with its unit, e.g. 16GB or 12GiB (KB, MB, GB, TB, KiB, MiB, GiB, TiB), found '16 gigs'");
    expect(configError('device: { memory: 0GB }\n')).toBe("prune-gate.yml: device.memory: a memory size with its unit, e.g. 16GB or 12GiB (KB, MB, GB, TB, KiB, MiB, GiB, TiB), found '0GB'");
    expect(configError('device: { thread: 2 }\n')).toBe('prune-gate.yml: device.thread: unknown key (did you mean threads?)');
    expect(configError('prune:\n  structures: [ffn, neurons]\n')).toBe("prune-gate.yml: prune.structures[1]: unknown structure 'neurons' (expected ffn, heads, channels, blocks)");
    expect(configError('model: 3\n')).toBe('prune-gate.yml: model: expected a path to an .onnx file, found 3');
  });

  test('a missing model or calibration file', () => {
    expect(configError('model: models/nope.onnx\n')).toBe('prune-gate.yml: model: file not found: models/nope.onnx');
    expect(configError('calibration: calib/none\n')).toBe('prune-gate.yml: calibration: file or folder not found: calib/none');
    expect(() => loadConfig('other.yml')).toThrow('config file not found: other.yml');
  });

  test('bad gate entries: unknown metric, wrong bound, two bounds, bad value, bad percentage use', () => {
    expect(configError('gate:\n  acuracy: { max-drop: 0.01 }\n')).toBe('prune-gate.yml: gate.acuracy: unknown metric (did you mean accuracy?)');
    expect(configError('gate:\n  accuracy: { max-increase: 0.01 }\n')).toBe(
      'prune-gate.yml: gate.accuracy.max-increase: is not a bound of this metric; accuracy takes max-drop or min',
    );
    expect(configError('gate:\n  accuracy: { maxdrop: 0.01 }\n')).toBe('prune-gate.yml: gate.accuracy.maxdrop: unknown bound; accuracy takes max-drop or min');
    expect(configError('gate:\n  accuracy: { max-drop: 0.01, min: 0.5 }\n')).toBe('prune-gate.yml: gate.accuracy: give exactly one bound (max-drop or min), found 2');
    expect(configError('gate:\n  perplexity: { max-increase: five percent }\n')).toBe(
      `prune-gate.yml: gate.perplexity.max-increase: expected a number in the metric's unit (e.g. 0.01) or a percentage of the base model's value (e.g. 5%), found "five percent"`,
    );
    expect(configError('gate:\n  perplexity: { max-increase: 5%% }\n')).toMatch(/gate\.perplexity\.max-increase: expected a number in the metric's unit/);
    expect(configError('gate:\n  latency-p50: { min-speedup: 20% }\n')).toBe(
      'prune-gate.yml: gate.latency-p50.min-speedup: min-speedup takes a factor such as 1.2 (20 % faster), not a percentage',
    );
    expect(configError('gate:\n  size: { max-ratio: 0 }\n')).toBe('prune-gate.yml: gate.size.max-ratio: must be greater than 0, found 0');
    expect(configError('gate:\n  accuracy: 0.01\n')).toBe('prune-gate.yml: gate.accuracy: expected a bound such as { max-drop: 0.01 }, found 0.01');
  });

  test('a bound written in the wrong unit is refused with the spelling it likely meant', () => {
    // Each of these was accepted before and then failed every run or never checked anything.
    expect(configError('gate:\n  agreement: { min: 99 }\n')).toBe("prune-gate.yml: gate.agreement.min: 99 is above 1, which agreement never reaches; write 0.99 or 99% (of the base model's)");
    expect(configError('gate:\n  accuracy: { max-drop: 1 }\n')).toBe(
      "prune-gate.yml: gate.accuracy.max-drop: 1 lets all of accuracy (a fraction) go, so it never fails; write 0.01 for 1 point or 1% (of the base model's)",
    );
    expect(configError('gate:\n  size: { max-ratio: 1.5 }\n')).toBe(
      'prune-gate.yml: gate.size.max-ratio: 1.5 is above 1, and pruning only makes size smaller, so it never fails; write 0.666667 for 1.5x smaller (max-ratio is candidate / base)',
    );
    expect(configError('gate:\n  params: { max-ratio: 150% }\n')).toMatch(/^prune-gate\.yml: gate\.params\.max-ratio: 150% is above 1/);
    expect(configError('gate:\n  cosine: { min: 95 }\n')).toMatch(/^prune-gate\.yml: gate\.cosine\.min: 95 is above 1/);
    // The edges stay valid: all digits agreeing, a size that may not grow, points and percentages.
    const ok = (gate: Record<string, unknown>) => parseGate(gate, 'prune-gate.yml');
    expect(ok({ agreement: { min: 1 } })).toHaveLength(1);
    expect(ok({ size: { 'max-ratio': 1 } })).toHaveLength(1);
    expect(ok({ accuracy: { 'max-drop': 0.5 }, 'rouge-l': { 'max-drop': '10%' }, agreement: { min: '99%' } })).toHaveLength(3);
    expect(ok({ memory: { 'max-ratio': 1.5 }, 'latency-p50': { 'max-ratio': 1.2 }, perplexity: { 'max-increase': 15 } })).toHaveLength(3);
  });

  test('YAML that does not parse names the line', () => {
    expect(configError('model: m.onnx\nprune:\n  target: [0.3\n')).toBe('prune-gate.yml: line 4: not valid YAML: Flow sequence in block collection must be sufficiently indented and end with a ]');
    expect(configError('- a\n- b\n')).toBe('prune-gate.yml: expected a mapping of keys (model, calibration, prune, quantize, gate)');
  });
});

describe('command-line overrides', () => {
  const flag = (key: string) => `--${key}`;
  const flags = (raw: Parameters<typeof parseOverrides>[0]) => parseOverrides(raw, flag);

  test('flags override the config, paths relative to the working folder', () => {
    const c = applyOverrides(parseConfig(VALID, path.resolve('prune-gate.yml')), flags({ target: '0.25', quantize: 'none', model: 'models/m.onnx' }));
    expect(c.prune.target).toBe(0.25);
    // 0 prunes nothing (quantize only), in the file and on the command line.
    expect(parseConfig('prune:\n  target: 0\n', path.resolve('prune-gate.yml')).prune.target).toBe(0);
    expect(applyOverrides(c, flags({ target: '0' })).prune.target).toBe(0);
    expect(flags({ target: '0.' }).target).toBe(0); // one parser: "0." is 0 everywhere
    expect(flags({ target: 'auto' }).target).toBe('auto');
    // A percentage is a share of the parameters, from the command line and in the file.
    expect(flags({ target: '30%' }).target).toBe(0.3);
    expect(flags({ target: '12.5 %' }).target).toBe(0.125);
    expect(parseConfig('prune:\n  target: 30%\n', path.resolve('prune-gate.yml')).prune.target).toBe(0.3);
    expect(c.model).toBe(path.resolve('models/m.onnx'));
  });

  test('bad flags name the flag', () => {
    expect(() => flags({ target: '100%' })).toThrow("--target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found '100%'");
    expect(() => flags({ target: '%' })).toThrow(/--target: expected a fraction/);
    expect(() => flags({ target: '1' })).toThrow(/--target: expected a fraction/);
    expect(() => flags({ quantize: 'fp8' })).toThrow("--quantize: expected none, int8, int4, found 'fp8'");
    expect(() => flags({ model: 'x.onnx' })).toThrow('--model: file not found: x.onnx');
    expect(() => flags({ calibration: 'nowhere' })).toThrow('--calibration: file or folder not found: nowhere');
  });

  test('without ./prune-gate.yml the flags must name model and calibration', () => {
    expect(() => resolveConfig(undefined, {}, flag)).toThrow(
      `no prune-gate.yml in ${process.cwd()} and no --model or --calibration: create prune-gate.yml there with "model:" and "calibration:" (README, "Configuration"), give --config FILE, or give --model and --calibration`,
    );
    const c = resolveConfig(undefined, flags({ model: 'models/m.onnx', calibration: 'calib' }), flag);
    expect(c.file).toBeUndefined();
    expect(c.prune.target).toBe('auto');
    expect(() => resolveConfig('missing.yml', {}, flag)).toThrow('--config: file not found: missing.yml');
  });
});
