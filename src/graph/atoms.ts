/**
 * Channel atoms: every index of every static axis of every tensor (a "slot" is one tensor axis).
 * Op rules declare which atoms must be removed together; a union-find keeps the classes. A class
 * is one removable unit (an FFN neuron, a head, a conv channel) when nothing froze any of its
 * atoms. Working on atoms rather than whole axes makes index maps (fused QKV offsets, heads as
 * blocks of head_dim, KV groups repeated over query heads) fall out of plain unions.
 */
export interface Slot {
  id: number;
  tensor: string;
  axis: number;
  size: number;
  /** Id of the slot's first atom. */
  base: number;
  /** The tensor is an initializer or Constant output: its data is sliced when atoms go. */
  constant: boolean;
}

export class AtomSpace {
  readonly slots: Slot[] = [];
  private readonly byKey = new Map<string, Slot>();
  private parent = new Int32Array(0);
  private rank = new Uint8Array(0);
  private atoms = 0;
  /** Why a slot may not shrink; the first reason given wins. */
  readonly frozen = new Map<number, string>();
  /**
   * Slots a normalization computes its statistics over (LayerNorm, a ReduceMean): they may
   * shrink, unless their class is also a residual stream (see analysis.ts).
   */
  readonly normalized = new Map<number, string>();

  addSlot(tensor: string, axis: number, size: number, constant: boolean): Slot {
    const key = `${axis}:${tensor}`;
    const existing = this.byKey.get(key);
    if (existing) return existing;
    const slot: Slot = { id: this.slots.length, tensor, axis, size, base: this.atoms, constant };
    this.atoms += size;
    this.slots.push(slot);
    this.byKey.set(key, slot);
    return slot;
  }

  /** Call once every slot exists, before any union. */
  seal(): void {
    this.parent = new Int32Array(this.atoms);
    for (let i = 0; i < this.atoms; i++) this.parent[i] = i;
    this.rank = new Uint8Array(this.atoms);
  }

  get atomCount(): number {
    return this.atoms;
  }

  slot(tensor: string, axis: number): Slot | undefined {
    return this.byKey.get(`${axis}:${tensor}`);
  }

  slotsOf(tensor: string): Slot[] {
    return this.slots.filter((s) => s.tensor === tensor);
  }

  find(a: number): number {
    const p = this.parent;
    while (p[a] !== a) {
      p[a] = p[p[a]];
      a = p[a];
    }
    return a;
  }

  union(a: number, b: number): void {
    let ra = this.find(a);
    let rb = this.find(b);
    if (ra === rb) return;
    if (this.rank[ra] < this.rank[rb]) [ra, rb] = [rb, ra];
    this.parent[rb] = ra;
    if (this.rank[ra] === this.rank[rb]) this.rank[ra]++;
  }

  freeze(slot: Slot, reason: string): void {
    if (!this.frozen.has(slot.id)) this.frozen.set(slot.id, reason);
  }

  normalize(slot: Slot, reason: string): void {
    if (!this.normalized.has(slot.id)) this.normalized.set(slot.id, reason);
  }

  /** Atom i of `a` is atom i of `b`. */
  same(a: Slot, b: Slot): void {
    const n = Math.min(a.size, b.size);
    for (let i = 0; i < n; i++) this.union(a.base + i, b.base + i);
  }

  /** Atom i of `part` is atom offset+i of `whole` (Split, Concat). */
  offset(whole: Slot, part: Slot, offset: number): void {
    for (let i = 0; i < part.size && offset + i < whole.size; i++) this.union(whole.base + offset + i, part.base + i);
  }

  /**
   * Atom o*inner+k of `merged` belongs to atom o of `outer` (a reshape split into heads). When
   * `merged` is a multiple of outer x inner, its leading factor selects among copies (q, k, v of
   * a fused projection): atom s*outer*inner + o*inner + k belongs to o as well.
   */
  outer(merged: Slot, outer: Slot, inner: number): void {
    for (let i = 0; i < merged.size; i++) this.union(merged.base + i, outer.base + (Math.floor(i / inner) % outer.size));
  }

  /** Atoms offset + h*size + k of each part (k < size) are one unit, head h: see RuleContext.heads. */
  heads(count: number, parts: { slot: Slot; size: number; offset: number }[]): void {
    const first = parts[0];
    for (const { slot, size, offset } of parts) {
      for (let h = 0; h < count; h++) {
        for (let k = 0; k < size; k++) this.union(first.slot.base + first.offset + h * first.size, slot.base + offset + h * size + k);
      }
    }
  }
}
