/** A byte-bounded least-recently-used map: the in-memory chunk caches on both sides of the worker. */
export class ByteLru<K> {
  private readonly map = new Map<K, Uint8Array>();
  private bytes = 0;

  /** @param budget Most bytes kept; the oldest entries go first when it is exceeded. */
  constructor(private readonly budget: number) {}

  get(key: K): Uint8Array | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      // Re-insert so Map's insertion order doubles as recency order.
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  /** Looks without touching recency (for synchronous probes that must not reorder). */
  peek(key: K): Uint8Array | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: Uint8Array): void {
    this.delete(key);
    this.map.set(key, value);
    this.bytes += value.byteLength;
    for (const [oldKey, old] of this.map) {
      if (this.bytes <= this.budget || oldKey === key) break;
      this.map.delete(oldKey);
      this.bytes -= old.byteLength;
    }
  }

  delete(key: K): void {
    const old = this.map.get(key);
    if (old === undefined) return;
    this.map.delete(key);
    this.bytes -= old.byteLength;
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.map.size;
  }

  get byteSize(): number {
    return this.bytes;
  }
}
