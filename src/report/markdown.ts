import { bytes as formatBytes, si } from '../util/format';
import { CLI_COMMAND } from '../util/install';
import type { MetricName } from '../eval/metric-names';
import { METRICS, isLatency } from '../gate/metrics';
import { formatValue } from '../gate/format';
import type { Report, ReportStep } from './schema';

/**
 * report.md: what the PR comment and the job summary show. Every string that comes from the
 * model or the report (tensor and node names, paths, reasons) goes through escapeMarkdown: a
 * report can come from an untrusted fork, and a model can name a tensor `<img src=x onerror=...>`.
 * Numbers come from the schema-checked report, metric names from a fixed list.
 */

/** Characters with a meaning in GitHub Markdown or HTML, written as character references. */
const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '|': '&#124;', // table cell separator
  '\\': '&#92;',
  '`': '&#96;',
  '*': '&#42;',
  _: '\\_', // a backslash escape: two fifths of the bytes of &#95;, and names are full of underscores
  '~': '&#126;',
  '[': '&#91;', // with ] escaped, ( and ) cannot make a link: left as they are (the comment's bytes: docs/contracts.md)
  ']': '&#93;',
  '!': '&#33;',
  '#': '&#35;',
  $: '&#36;', // math
  ':': '&#58;', // autolinks (http://), emoji shortcodes
  '=': '&#61;',
  '{': '&#123;',
  '}': '&#125;',
};

const MAX_NAME = 300;

/**
 * Makes an untrusted string inert inline text: no HTML, no Markdown syntax, no table breaks, no
 * @mentions or autolinks, one line, bounded length.
 */
export function escapeMarkdown(s: string, max = MAX_NAME): string {
  const oneLine = s.replace(/[\r\n\t\u2028\u2029]+/g, ' ');
  const clipped = oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine;
  return clipped
    .replace(/[&<>"'|\\`*_~[\]!#$:={}]/g, (c) => ESCAPES[c])
    .replace(/@/g, '@\u200b') // a zero-width space after @ stops a mention
    .replace(/www\./gi, (m) => `${m.slice(0, 3)}&#46;`); // bare www. autolinks
}

/** What a marker may hold: inside an HTML comment only "--" and ">" matter; keep it one token-ish line. */
function markerText(s: string): string {
  return s.replace(/[^A-Za-z0-9._/@+-]/g, '_').replace(/-{2,}/g, '-');
}

/**
 * The hidden marker that finds this config and model's comment again (one comment per config
 * and model: docs/contracts.md), so two configs gating one model (int8 and int4) keep two.
 */
export function stickyMarker(modelPath: string, configPath: string | null | undefined): string {
  return `<!-- prune-gate:model=${markerText(modelPath)} config=${markerText(configPath ?? '-')} -->`;
}

/** The marker of versions that kept one comment per model: their comments are adopted. */
export function legacyMarker(modelPath: string): string {
  return `<!-- prune-gate:${markerText(modelPath)} -->`;
}

// ---------------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------------

/** Candidate against base: points for fractions, a relative change for everything else. */
export function formatChange(name: MetricName, base: number | null, cand: number | null): string {
  if (base === null || cand === null || !Number.isFinite(base) || !Number.isFinite(cand)) return '–';
  const unit = METRICS[name].unit;
  if (unit === 'fraction') return `${signed((cand - base) * 100, 2)} pts`;
  if (base === 0) return cand === 0 ? '0' : signed(cand, 4);
  return `${signed(((cand - base) / Math.abs(base)) * 100, 1)} %`;
}

function signed(v: number, decimals: number): string {
  const s = v.toFixed(decimals);
  return v > 0 ? `+${s}` : v < 0 ? s.replace('-', '−') : s.replace('-', '');
}

function formatBound(name: MetricName, bound: number | null, rule: string | null): string {
  if (rule === null) return '';
  const op = METRICS[name].higherIsBetter ? '≥' : '≤';
  return `${op} ${formatValue(name, bound)} (${escapeMarkdown(rule)})`;
}

function ratioText(base: number, cand: number): string {
  if (!(base > 0) || !(cand > 0)) return '–';
  return `${(base / cand).toFixed(2)}x smaller (${signed(((cand - base) / base) * 100, 1)} %)`;
}

function percentOf(r: number): string {
  return `${Number((r * 100).toFixed(1))}%`;
}

/** A step's share removed, counted (reports of older versions give only the target). */
function removedOf(s: ReportStep): number {
  return s.removed ?? s.ratio;
}

/** The share removed, with the target beside it where the two differ as shown. */
function removedWithTarget(s: ReportStep): string {
  const removed = percentOf(removedOf(s));
  return removed === percentOf(s.ratio) ? removed : `${removed} (target ${percentOf(s.ratio)})`;
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

function table(header: string[], rows: string[][]): string[] {
  return [row(header), row(header.map(() => '---')), ...rows.map(row)];
}

/** The bounds a step or candidate broke, each with its rule: "perplexity (max-increase 15%)". */
function brokenBounds(metrics: Report['metrics']): string {
  return metrics
    .filter((m) => !m.pass)
    .map((m) => `${m.name} (${escapeMarkdown(m.rule ?? '')}${m.inconclusive ? ', inconclusive' : ''})`)
    .join(', ');
}

/**
 * Why this ratio, in one line (a run's report only): the largest step that kept every bound and
 * what broke the next one; for a fixed target, whether it kept them; for a failure, what broke.
 */
function whyLine(r: Report): string | undefined {
  if (r.target === null || r.chosen_step === null || !r.steps[r.chosen_step]) return undefined;
  const kept = r.steps[r.chosen_step];
  const nothing = kept.ratio === 0; // quantized only: no ratio to explain
  const at = nothing ? `the ${r.quantize} model, nothing pruned` : percentOf(removedOf(kept));
  const next = r.steps[r.chosen_step + 1];
  const nextBroke = next && !next.pass ? `; ${percentOf(removedOf(next))} broke ${brokenBounds(next.metrics)}` : '';
  if (r.target !== 'auto') {
    const target = nothing ? at : `${at} (the target)`;
    return kept.pass ? `Kept ${target}: within every bound.` : `Failed at ${target}: it broke ${brokenBounds(kept.metrics)}.`;
  }
  if (!kept.pass) return `No step kept every bound: ${at} broke ${brokenBounds(kept.metrics)}${nextBroke}.`;
  if (next) return `Kept ${at}: the largest step within every bound${nextBroke}.`;
  return r.steps.length === 1 ? `Kept ${at}: within every bound.` : `Kept ${at}: the last step tried, within every bound.`;
}

function verdictLine(r: Report): string {
  // Not a code span: character references are not decoded inside one.
  const model = `**${escapeMarkdown(r.base.path)}**`;
  const what =
    r.target === null
      ? `compared with ${escapeMarkdown(r.candidate.path)}`
      : r.steps.length && r.chosen_step !== null
        ? r.steps[r.chosen_step].ratio === 0
          ? `quantized to ${r.quantize}, nothing pruned`
          : `pruned ${removedWithTarget(r.steps[r.chosen_step])} of the parameters${r.quantize === 'none' ? '' : ` and quantized to ${r.quantize}`}`
        : '';
  const why = whyLine(r);
  const mark = r.verdict === 'pass' ? '✅' : '❌';
  // With a why line on top, the verdict line under it names the model; without one it is the heading.
  const verdict = `prune-gate ${r.verdict === 'pass' ? 'passed' : 'failed'}: `;
  const head = why ? `### ${mark} ${why}\n\n${verdict}` : `### ${mark} ${verdict}`;
  if (r.verdict === 'pass') {
    const unsure = r.metrics.filter((m) => m.inconclusive).map((m) => `${m.name} (${escapeMarkdown(m.rule ?? '')})`);
    return `${head}${model} ${what}${unsure.length ? ` — inconclusive, counted as passing: ${unsure.join(', ')}` : ''}`.trimEnd();
  }
  const failed = brokenBounds(r.metrics);
  return `${head}${model} ${what}${failed ? ` — over the bound: ${failed}` : ''}`;
}

/**
 * Latency has rows only where it means something: a latency bound is set, or the speedup's
 * interval excludes 1 (the candidate is measurably faster or slower). Otherwise the rows would
 * change on every push with nothing to say. A report without an interval (an older one) shows them.
 */
function showsLatency(r: Report): boolean {
  const interval = r.latency.interval;
  return r.metrics.some((m) => isLatency(m.name) && m.rule !== null) || interval === undefined || (interval !== null && (interval[0] > 1 || interval[1] < 1));
}

function passCell(m: Report['metrics'][number]): string {
  if (m.rule === null) return '';
  if (m.inconclusive) return `❔ inconclusive (counted as ${m.pass ? 'a pass' : 'a fail'})`;
  return m.pass ? '✅' : '❌';
}

/** Decode speed's timing of a metric, in report.json's `decode`. */
function decodeTiming(r: Report, name: MetricName): NonNullable<Report['decode']>['tokens_per_second'] | undefined {
  return name === 'decode-tokens-per-second' ? r.decode?.tokens_per_second : name === 'time-to-first-token' ? r.decode?.time_to_first_token : undefined;
}

function metricsTable(r: Report): string[] {
  const shown = showsLatency(r);
  return table(
    ['metric', 'base', 'candidate', 'change', 'bound', 'pass'],
    r.metrics
      .filter((m) => shown || !isLatency(m.name))
      .map((m) => [m, m.interval ?? decodeTiming(r, m.name)?.candidate_interval] as const)
      .map(([m, interval]) => [
        m.name,
        formatValue(m.name, m.base),
        formatValue(m.name, m.candidate) + (interval ? ` (95 % ${formatValue(m.name, interval[0])} to ${formatValue(m.name, interval[1])})` : ''),
        formatChange(m.name, m.base, m.candidate),
        formatBound(m.name, m.bound, m.rule),
        passCell(m),
      ]),
  );
}

/** Params, bytes and MACs, each only where the metrics table lacks its row (no row said twice). */
function compressionTable(r: Report): string[] {
  const macs = r.base.macs !== null && r.candidate.macs !== null;
  const listed = new Set<string>(r.metrics.map((m) => m.name));
  const rows: [MetricName, string[]][] = [
    ['params', ['params', si(r.base.params), si(r.candidate.params), ratioText(r.base.params, r.candidate.params)]],
    ['size', ['bytes on disk', formatBytes(r.base.bytes), formatBytes(r.candidate.bytes), ratioText(r.base.bytes, r.candidate.bytes)]],
    [
      'macs',
      [
        'MACs per sample',
        r.base.macs === null ? '–' : si(r.base.macs),
        r.candidate.macs === null ? '–' : si(r.candidate.macs),
        macs ? ratioText(r.base.macs as number, r.candidate.macs as number) : '–',
      ],
    ],
  ];
  const missing = rows.filter(([name]) => !listed.has(name)).map(([, cells]) => cells);
  return missing.length ? ['#### Compression', '', ...table(['', 'base', 'candidate', 'change'], missing)] : [];
}

function quantizationSection(r: Report): string[] {
  const q = r.quantization;
  if (!q) return [];
  const lines = [
    `#### Quantization (${r.quantize})`,
    '',
    `Weights of ${q.layers} ${q.layers === 1 ? 'layer' : 'layers'} quantized: ${formatBytes(q.weight_bytes_before)} → ${formatBytes(q.weight_bytes_after)}, ${ratioText(q.weight_bytes_before, q.weight_bytes_after)}.` +
      (q.names_bytes_saved > 0 ? ` Intermediate tensor names shortened: ${formatBytes(q.names_bytes_saved)} fewer.` : ''),
    ...(q.method
      ? [
          '',
          `Codes chosen by ${q.method.used} (quantize-method ${q.method.asked}): mean relative output error on the calibration data ${q.method.calibration_error.toPrecision(3)}, against ${q.method.rtn_calibration_error.toPrecision(3)} rounded to nearest.`,
        ]
      : []),
  ];
  const exceptions = details(
    `Stored with more bits than ${r.quantize} (${q.exceptions.length} ${q.exceptions.length === 1 ? 'layer' : 'layers'})`,
    ['where', 'stored', 'why'],
    q.exceptions.map((e) => [escapeMarkdown(e.where), e.stored, escapeMarkdown(e.reason, 500)]),
  );
  return exceptions.length ? [...lines, '', ...exceptions] : lines;
}

function latencyTable(r: Report): string[] {
  const l = r.latency;
  const x = (v: number) => `${v.toFixed(2)}x`;
  const runs = l.runs !== undefined ? `${l.runs} ${l.runs === 1 ? 'run' : 'runs'} of each model${l.seconds !== undefined ? ` in ${Number(l.seconds.toPrecision(2))} s` : ''}` : '';
  const interval = l.interval ? `95 % interval ${x(l.interval[0])} to ${x(l.interval[1])}` : l.interval === null ? 'too few runs for an interval' : '';
  const about = [interval, runs].filter(Boolean).join(', ');
  if (!showsLatency(r)) return [`Latency: not told apart from the base's on this machine (${about}).`];
  const ms = (v: number) => formatValue('latency-p50', v);
  // The medians are rows of the metrics table when it has them: not said twice.
  const rows = r.metrics.some((m) => m.name === 'latency-p50')
    ? []
    : [
        ...table(
          ['', 'p50', 'p95'],
          [
            ['base', ms(l.base.p50_ms), ms(l.base.p95_ms)],
            ['candidate', ms(l.candidate.p50_ms), ms(l.candidate.p95_ms)],
          ],
        ),
        '',
      ];
  const heading = rows.length ? ['#### Latency (one calibration batch, base and candidate runs alternated)', ''] : [];
  return [
    ...heading,
    ...rows,
    `${rows.length ? 'Speedup (base p50 / candidate p50)' : 'Latency speedup (base p50 / candidate p50)'}: **${l.speedup === null ? '–' : x(l.speedup)}**${about ? ` (${about})` : ''}`,
    // The warnings are the tool's own words and numbers, but the report may be untrusted: escaped.
    // The first says why the figure may be off; the rest stay in report.json, so a busy machine
    // does not push the comment past a glance.
    ...(l.warnings?.length
      ? [`\n> ⚠️ ${escapeMarkdown(l.warnings[0], 500)}${l.warnings.length > 1 ? ` (${l.warnings.length - 1} more in report.json's latency.warnings)` : ''}`]
      : []),
  ];
}

function decodeSection(r: Report): string[] {
  const d = r.decode;
  if (!d) return [];
  const x = (v: number | null) => (v === null ? '–' : `${v.toFixed(2)}x`);
  const about = (t: typeof d.tokens_per_second, run: string) =>
    `${x(t.speedup)} (${t.interval ? `95 % ${x(t.interval[0])} to ${x(t.interval[1])}` : `too few ${run}s for an interval`}, ${t.runs} ${t.runs === 1 ? run : `${run}s`} of each model in ${Number(t.seconds.toPrecision(2))} s)`;
  const how = d.cache ? 'each step one token on the KV cache' : 'the model has no KV cache: each step re-runs the whole sequence, as decoding it does';
  return [
    `#### Decode speed (batch 1, a ${d.prompt_tokens}-token prompt then ${d.steps} steps; ${how})`,
    '',
    ...table(
      ['', 'time to first token', 'decode'],
      [
        ['base', formatValue('time-to-first-token', d.time_to_first_token.base), formatValue('decode-tokens-per-second', d.tokens_per_second.base)],
        ['candidate', formatValue('time-to-first-token', d.time_to_first_token.candidate), formatValue('decode-tokens-per-second', d.tokens_per_second.candidate)],
      ],
    ),
    '',
    `Decode speedup (candidate / base tokens per second): **${about(d.tokens_per_second, 'step')}**; time to first token, base / candidate: ${about(d.time_to_first_token, 'run')}`,
    ...[...d.time_to_first_token.warnings.map((w) => `time to first token: ${w}`), ...d.tokens_per_second.warnings.map((w) => `decode: ${w}`)].map((w) => `\n> ⚠️ ${escapeMarkdown(w, 500)}`),
  ];
}

/** The metric the chart follows: the first bounded quality metric, else the task's own. */
export function mainMetric(r: Report): MetricName {
  const bounded = r.metrics.find((m) => m.rule !== null && METRICS[m.name].kind === 'quality');
  if (bounded) return bounded.name;
  if (r.task === 'generation') return r.metrics.some((m) => m.name === 'rouge-l') ? 'rouge-l' : 'sequence-agreement';
  return r.task === 'language-model' ? 'perplexity' : r.task === 'classification' ? 'accuracy' : 'agreement';
}

function stepValue(step: ReportStep, name: MetricName, field: 'candidate' | 'bound'): number | null {
  return step.metrics.find((m) => m.name === name)?.[field] ?? null;
}

/** The metrics a step was judged on: every bounded one (in the metrics table's order), else the main one. */
function gatedMetrics(r: Report): MetricName[] {
  const gated = r.metrics.filter((m) => m.rule !== null && r.steps.some((s) => s.metrics.some((x) => x.name === m.name))).map((m) => m.name);
  return gated.length ? gated : [mainMetric(r)];
}

function stepsSection(r: Report): string[] {
  if (r.steps.length === 0) return [];
  const main = mainMetric(r);
  const gated = gatedMetrics(r);
  const rows = r.steps.map((s, i) => [
    String(i + 1) + (i === r.chosen_step ? ' ⬅' : ''),
    removedWithTarget(s),
    ...gated.map((name) => formatValue(name, stepValue(s, name, 'candidate'))),
    s.pass ? '✅' : `❌ ${brokenBounds(s.metrics) || (s.quality_pass ? 'efficiency' : 'quality')}`,
  ]);
  const drawn = chart(r, main);
  // A step short of its target says why, under the table (a reason is too long for a cell).
  const short = r.steps.flatMap((s, i) => (s.short ? [`- Step ${i + 1} removed ${percentOf(removedOf(s))} of the ${percentOf(s.ratio)} asked: ${escapeMarkdown(s.short)}.`] : []));
  return [
    '#### Gradual search',
    '',
    ...table(['step', 'params removed', ...gated, 'pass'], rows),
    ...(short.length ? ['', ...short] : []),
    ...(drawn.length ? ['', ...drawn] : []),
  ];
}

/** A Mermaid xychart of the main metric (and its bound) against the ratio pruned. */
export function chart(r: Report, main: MetricName = mainMetric(r)): string[] {
  const points = r.steps.map((s) => ({ x: percentOf(removedOf(s)), y: stepValue(s, main, 'candidate') }));
  if (points.length < 2 || points.some((p) => p.y === null)) return [];
  const scale = METRICS[main].unit === 'fraction' ? 100 : 1;
  const y = (v: number) => String(Number((v * scale).toPrecision(4))); // a chart's resolution
  const bounds = r.steps.map((s) => stepValue(s, main, 'bound'));
  const drawn = bounds.every((b) => b !== null);
  const lines = ['```mermaid', 'xychart-beta', `    title "${main} by parameters removed${drawn ? `; 2nd line: ${boundLabel(r, main, bounds as number[])}` : ''}"`];
  lines.push(`    x-axis "parameters removed" [${points.map((p) => `"${p.x}"`).join(', ')}]`);
  lines.push(`    y-axis "${main}${scale === 100 ? ' (%)' : ''}"`);
  lines.push(`    line [${points.map((p) => y(p.y as number)).join(', ')}]`);
  if (drawn) lines.push(`    line [${bounds.map((b) => y(b as number)).join(', ')}]`);
  lines.push('```');
  return lines;
}

/** The bound line's label: its value when the same at every step, and its rule, as chart text. */
function boundLabel(r: Report, main: MetricName, bounds: number[]): string {
  const rule = r.metrics.find((m) => m.name === main)?.rule ?? r.steps.flatMap((s) => s.metrics).find((m) => m.name === main)?.rule ?? '';
  const op = METRICS[main].higherIsBetter ? '≥' : '≤';
  const value = bounds.every((b) => b === bounds[0]) ? ` ${op} ${formatValue(main, bounds[0])}` : '';
  // Inside a quoted Mermaid string: nothing that could close it or read as markup.
  return `the bound${value}${rule ? ` (${rule})` : ''}`.replace(/[^A-Za-z0-9 .,%+()≤≥–-]/g, '');
}

const MAX_ROWS = 200;

function details(summary: string, header: string[], rows: string[][]): string[] {
  if (rows.length === 0) return [];
  const shown = rows.slice(0, MAX_ROWS);
  const more = rows.length > MAX_ROWS ? ['', `… and ${rows.length - MAX_ROWS} more (see report.json)`] : [];
  return ['<details>', `<summary>${summary}</summary>`, '', ...table(header, shown), ...more, '', '</details>'];
}

function prunedSection(r: Report): string[] {
  return details(
    `What was pruned (${r.pruned.length} ${r.pruned.length === 1 ? 'place' : 'places'})`,
    ['kind', 'where', 'before', 'after', 'params removed'],
    r.pruned.map((p) => [p.kind, escapeMarkdown(p.where), String(p.before), String(p.after), si(p.params)]),
  );
}

const ALLOCATION_WORDS: Record<NonNullable<Report['allocation']>['strategy'], string> = {
  global: 'a global ranking',
  uniform: 'the same share in every layer',
  'ffn-only': 'FFN widths only',
  measured: 'measured damage',
};
const COMPENSATION_WORDS: Record<NonNullable<Report['allocation']>['compensate'], string> = { none: 'not compensated', bias: 'bias-compensated', reconstruct: 'reconstructed' };

/**
 * Which allocation and compensation were kept, in words; the alternatives are counted, not listed
 * (report.json lists each with its loss: measured on different shares of the data, a list beside
 * the kept one's would compare unlike figures). In a report the line points there; elsewhere (the
 * prune command) it gives the loss the kept one was chosen on instead.
 */
export function allocationLine(a: NonNullable<Report['allocation']>, inReport = false): string {
  const kept = `Allocation by ${ALLOCATION_WORDS[a.strategy]}, ${COMPENSATION_WORDS[a.compensate]}${a.align > 1 ? `, widths multiples of ${a.align}` : ''}`;
  const speed = a.latency === undefined || a.latency === null ? '' : `; ${a.latency.toFixed(2)}x the base's time here`;
  const same = (t: (typeof a.tried)[number]) => t.strategy === a.strategy && t.compensate === a.compensate;
  const mine = a.tried.filter((t) => same(t) && t.loss !== null).sort((x, y) => x.loss! - y.loss!)[0];
  const others = a.tried.length - (mine ? 1 : 0);
  const alternatives = others > 0 ? `; ${others} ${others === 1 ? 'alternative' : 'alternatives'} tried${inReport ? ', see report.json' : ''}` : '';
  if (!mine || inReport) return `${kept}${mine ? '' : ` (${a.measure})`}${alternatives}${speed}`;
  return `${kept}: ${a.measure} ${mine.loss!.toPrecision(4)} on ${a.on ?? 'the calibration set'}${alternatives}${speed}`;
}

function allocationSection(r: Report): string[] {
  // Every part of the line is the engine's own words and numbers: nothing to escape.
  // The loss it was chosen on stays in report.json: a figure without its alternatives' beside it says little.
  return r.allocation && r.pruned.length ? [allocationLine(r.allocation, true)] : [];
}

/**
 * What became of a quantized input's weights: kept bytes, and the requantized ones with their
 * errors, a line each (`name` shows a node name: the markdown escapes it, the terminal not).
 */
export function quantizedInputsLines(q: NonNullable<Report['quantized_inputs']>, name: (where: string) => string = (w) => w, bullet = '  '): string[] {
  const total = q.exact + q.requantized.length;
  const head = `Quantized weights: ${q.exact} of ${total} kept their original codes (output rows removed, or input columns in whole blocks)`;
  if (q.requantized.length === 0) return [`${head}.`];
  const rows = q.requantized.slice(0, 10).map((w) => `${bullet}${name(w.where)}: ${w.format}, ${w.how}, relative weight error ${w.error.toPrecision(3)}`);
  const more = q.requantized.length > 10 ? [`${bullet}… and ${q.requantized.length - 10} more`] : [];
  return [`${head}; ${q.requantized.length} requantized in the same scheme, worst relative weight error ${q.worst.toPrecision(3)}:`, ...rows, ...more];
}

function quantizedInputsSection(r: Report): string[] {
  // The engine's own words and numbers, but for the node names.
  return r.quantized_inputs ? quantizedInputsLines(r.quantized_inputs, (w) => escapeMarkdown(w), '- ') : [];
}

const MAX_WHERE = 80;

/**
 * The places of one reason in one cell: as many as fit, then how many more (report.json lists
 * each). An entry the engine already cut ("A, B and 38 more") counts as its names and the rest.
 */
function placesCell(wheres: string[]): string {
  const names: string[] = [];
  let more = 0;
  for (const where of wheres) {
    const cut = /^(.+) and (\d+) more$/.exec(where);
    names.push(...(cut ? cut[1].split(', ') : [where]));
    more += cut ? Number(cut[2]) : 0;
  }
  let shown = 1;
  while (shown < names.length && names.slice(0, shown + 1).join(', ').length <= MAX_WHERE) shown++;
  more += names.length - shown;
  return escapeMarkdown(names.slice(0, shown).join(', ')) + (more ? ` and ${more} more` : '');
}

function skippedSection(r: Report): string[] {
  // One row per reason: four layers' heads left alone for one reason are one row, not four.
  const byReason = new Map<string, string[]>();
  for (const s of r.skipped) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s.where]);
  return details(
    `Left alone (${r.skipped.length} ${r.skipped.length === 1 ? 'place' : 'places'})`,
    ['where', 'why'],
    [...byReason].map(([reason, wheres]) => [placesCell(wheres), escapeMarkdown(reason, 500)]),
  );
}

/** What the memory row is net of: the figures are each model's own, not the process's. */
function memoryNote(r: Report): string[] {
  const m = r.memory;
  if (!m) return [];
  const mib = (v: number) => formatValue('memory', v);
  return [
    `<sub>memory: each model's own peak RSS, net of the ${mib(m.runtime_mib)} the same process (Node.js, onnxruntime, the batch's inputs) peaks at without a model (its runs differ by ${mib(m.spread_mib)}); with the base it peaked at ${mib(m.base_peak_mib)}, with the candidate at ${mib(m.candidate_peak_mib)}.</sub>`,
  ];
}

/** The int8 form the figures come from, when the model did not fit device.memory: said before them, with what it costs. */
function evaluationFormNote(r: Report): string[] {
  const f = r.evaluation_form;
  if (!f) return [];
  const g = f.gap;
  const task = Object.keys(g.float).filter((k) => k in g.int8);
  const pct = (v: number | null) => (v === null ? 'not measured' : `${(v * 100).toFixed(2)} %`);
  return [
    `**Evaluated in a weight-only int8 form**: ${f.reason}, so the base and the candidates ran, and the statistics were collected, with every float MatMul weight as MatMulNBits (${f.bits} bits, block ${f.block_size}; ${(f.form_bytes / 2 ** 30).toFixed(1)} GiB instead of ${(f.model_bytes / 2 ** 30).toFixed(1)} GiB). The pruned model is written from the float weights.`,
    `That form against the float model on the first ${g.samples} samples: top-1 agreement ${pct(g.agreement)}, KL divergence ${g.kl_divergence === null ? 'not measured' : g.kl_divergence.toPrecision(3)}${task.map((k) => `, ${k} ${formatValue(k as never, g.float[k])} (float) and ${formatValue(k as never, g.int8[k])} (int8)`).join('')}.`,
  ];
}

/** Inputs or outputs the candidate changed: the app must feed it differently, so it leads, not hides. */
function interfaceSection(r: Report): string[] {
  if (!r.interface?.length) return [];
  const dims = (d: (number | string | null)[]) => `[${d.map((x) => (x === null ? '?' : escapeMarkdown(String(x)))).join(', ')}]`;
  return [
    `**The model's interface changed**: ${r.interface.length} ${r.interface.length === 1 ? 'input or output has' : 'inputs and outputs have'} a new shape; the code that feeds the model (a KV cache's buffers) must follow.`,
    '',
    ...table(
      ['', 'name', 'base', 'candidate'],
      r.interface.map((c) => [c.kind, `\`${escapeMarkdown(c.name)}\``, dims(c.base), dims(c.candidate)]),
    ),
  ];
}

/** A few generations decoded, base and candidate side by side (a generation set with a tokenizer). */
function examplesSection(r: Report): string[] {
  if (!r.examples?.length) return [];
  const cell = (t: string) => `<code>${escapeMarkdown(t, 400).replace(/\n/g, '⏎')}</code>`;
  const hasReference = r.examples.some((e) => e.reference !== undefined);
  return details(
    `Generations, base vs candidate (${r.examples.length} samples)`,
    ['line', 'prompt', ...(hasReference ? ['reference'] : []), 'base', 'candidate'],
    r.examples.map((e) => [String(e.line), cell(e.prompt), ...(hasReference ? [cell(e.reference ?? '')] : []), cell(e.base), cell(e.candidate)]),
  );
}

/** A URL as a Markdown link target: characters that could end the link are percent-encoded. */
function linkTarget(url: string): string {
  return url.replace(/[^A-Za-z0-9\-._~:/?#@!$&*+,;=%]/g, (c) => encodeURIComponent(c));
}

/**
 * A path as a shell word inside a code span: single-quoted when it holds a space. Characters
 * outside letters, digits, space and ._/+,:- become _ (a report may be untrusted: nothing in it
 * may read as markup, a mention or a link, even as code).
 */
function shellWord(p: string): string {
  const clean = p.replace(/[^A-Za-z0-9._/+,: -]/g, '_');
  return clean.includes(' ') ? `'${clean}'` : clean;
}

/** The command that reruns this gate (or comparison) in the user's repository, from the report's own fields. */
export function reproduceCommand(r: Report): string | undefined {
  if (!r.calibration) return undefined;
  const config = r.config ? ['--config', shellWord(r.config)] : [];
  const words =
    r.target === null
      ? [CLI_COMMAND, 'eval', '--base', shellWord(r.base.path), '--candidate', shellWord(r.candidate.path), '--calibration', shellWord(r.calibration.path), ...config]
      : [CLI_COMMAND, 'run', ...config, '--model', shellWord(r.base.path), '--calibration', shellWord(r.calibration.path), '--target', String(r.target), '--quantize', r.quantize];
  return words.join(' ');
}

/** Which commit and run the report judged, on what data, and how to reproduce it. */
function provenanceSection(r: Report): string[] {
  const parts: string[] = [];
  if (r.run) {
    const repository = r.run.url ? /^(https:\/\/[^/]+\/[^/]+\/[^/]+)\/actions\/runs\/\d+/.exec(r.run.url)?.[1] : undefined;
    const commit = `commit \`${r.run.sha.slice(0, 12)}\``;
    parts.push(repository ? `[${commit}](${linkTarget(`${repository}/commit/${r.run.sha}`)})` : commit);
    if (r.run.url) parts.push(`[the run](${linkTarget(r.run.url)})`);
    if (r.run.artifacts_url) parts.push(`[its artifacts](${linkTarget(r.run.artifacts_url)})`);
  }
  if (r.calibration) {
    const tokens = r.calibration.tokens !== null ? ` (${r.calibration.tokens.toLocaleString('en-US')} tokens)` : '';
    parts.push(`${r.calibration.samples.toLocaleString('en-US')} calibration samples${tokens} from \`${shellWord(r.calibration.path)}\``);
  }
  const command = reproduceCommand(r);
  const lines = parts.length ? [`<sub>Judged: ${parts.join(' · ')}.</sub>`] : [];
  if (command) lines.push(`<sub>Reproduce locally: \`${command}\`</sub>`);
  return lines.length ? [lines.join('\n\n')] : [];
}

/** What the figures were measured on: latency and memory are this machine's, not the device's. */
function environmentSection(r: Report): string[] {
  const e = r.environment;
  if (!e) return [];
  const threads = e.threads === e.cores ? `all ${e.cores} cores` : `${e.threads} of ${e.cores} cores`;
  return [`<sub>Measured on ${e.cpu}, onnxruntime on ${threads}; onnxruntime ${e.onnxruntime}, prune-gate ${e['prune-gate']}.</sub>`];
}

/** report.md for the job summary and the PR comment. */
export function renderMarkdown(r: Report): string {
  const sections: string[][] = [
    [verdictLine(r)],
    evaluationFormNote(r),
    metricsTable(r),
    memoryNote(r),
    interfaceSection(r),
    compressionTable(r),
    quantizationSection(r),
    latencyTable(r),
    decodeSection(r),
    stepsSection(r),
    prunedSection(r),
    allocationSection(r),
    quantizedInputsSection(r),
    skippedSection(r),
    examplesSection(r),
    provenanceSection(r),
    environmentSection(r),
  ];
  return `${sections
    .filter((s) => s.length > 0)
    .map((s) => s.join('\n'))
    .join('\n\n')}\n`;
}

const REFERENCES: Record<string, string> = Object.fromEntries([...Object.entries(ESCAPES).map(([c, ref]) => [ref, c]), ['&#46;', '.']]);

/**
 * The report as plain text for a terminal (the CLI's stdout): the character references and
 * HTML tags the Markdown needs undone, so names read as they are (`gate_proj`, not
 * `gate&#95;proj`). Only the references escapeMarkdown writes are decoded, and control
 * characters go, so an untrusted name cannot drive the terminal.
 */
export function plainText(markdown: string): string {
  return markdown
    .replace(/<\/?(?:sub|details)>\n?/g, '')
    .replace(/<summary>(.*?)<\/summary>/g, '#### $1')
    .replace(/<\/?code>/g, '`')
    .replace(/&(?:amp|lt|gt|quot|#\d+);|\\_/g, (ref) => REFERENCES[ref] ?? ref)
    .replace(/@\u200b/g, '@')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}
