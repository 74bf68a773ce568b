/** What `quantize:` in the config asks of every candidate: nothing, or weights in 8 or 4 bits. */
export const QUANTIZE_MODES = ['none', 'int8', 'int4'] as const;
export type QuantizeMode = (typeof QUANTIZE_MODES)[number];
