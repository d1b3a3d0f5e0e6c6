// Prometheus metrics for the gateway (prom-client), one registry per running gateway so tests and
// several gateways in one process do not share counters. Protocol code reports through the
// enforcement seam (sessions, operations, holds) and the listeners (refusals, limits); nothing
// here knows about sockets.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from '../recording/store.ts';
import type { SinkStatus } from '../recording/sinks.ts';
import type { DecisionAction } from '../policy/decision.ts';

/**
 * Operations decided in one protocol, by decision, not yet folded into the prom-client counter.
 * Counting is per statement on the proxies' hot path: a plain increment here instead of
 * prom-client's label hashing and validation per call; the counter takes the counts when read.
 */
export type OperationCounts = Record<DecisionAction, number>;

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly sessionsActive: Gauge<'protocol'>;
  readonly sessionsTotal: Counter<'protocol'>;
  readonly operations: Counter<'protocol' | 'decision'>;
  readonly holdsPending: Gauge<'protocol'>;
  readonly holdSeconds: Histogram<'protocol' | 'outcome'>;
  readonly approvalOutcomes: Counter<'protocol' | 'outcome'>;
  readonly refusedConnections: Counter<'protocol' | 'reason'>;
  readonly limitsHit: Counter<'protocol' | 'limit'>;
  /** PostgreSQL upstream pooling (gateway/postgres/pool.ts). */
  readonly poolBackends: Gauge<'connection' | 'state'>;
  readonly poolWaiting: Gauge<'connection'>;
  readonly poolPins: Counter<'connection' | 'reason'>;
  /** Pending per-protocol operation counts (see OperationCounts), folded into `operations` when it is read. */
  readonly #operationCounts = new Map<string, OperationCounts>();

  constructor(store?: Pick<Store, 'health'>) {
    const registers = [this.registry];
    this.sessionsActive = new Gauge({ name: 'airlock_sessions_active', help: 'Client sessions open now', labelNames: ['protocol'], registers });
    this.sessionsTotal = new Counter({ name: 'airlock_sessions_total', help: 'Client sessions started', labelNames: ['protocol'], registers });
    const pendingOps = this.#operationCounts;
    this.operations = new Counter({
      name: 'airlock_operations_total',
      help: 'Operations decided, by decision (allow, deny, review)',
      labelNames: ['protocol', 'decision'],
      registers,
      collect() {
        for (const [protocol, counts] of pendingOps) {
          for (const decision of Object.keys(counts) as DecisionAction[]) {
            const n = counts[decision];
            if (n === 0) continue;
            counts[decision] = 0;
            this.inc({ protocol, decision }, n);
          }
        }
      },
    });
    this.holdsPending = new Gauge({ name: 'airlock_holds_pending', help: 'Operations held for approval now', labelNames: ['protocol'], registers });
    this.holdSeconds = new Histogram({
      name: 'airlock_hold_duration_seconds',
      help: 'Time an operation was held for approval',
      labelNames: ['protocol', 'outcome'],
      buckets: [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.approvalOutcomes = new Counter({ name: 'airlock_approval_outcomes_total', help: 'Holds by outcome (approved, rejected, expired, cancelled, failed, refused)', labelNames: ['protocol', 'outcome'], registers });
    this.refusedConnections = new Counter({ name: 'airlock_refused_connections_total', help: 'Connections refused before a session started', labelNames: ['protocol', 'reason'], registers });
    this.limitsHit = new Counter({ name: 'airlock_limits_hit_total', help: 'Resource limits reached', labelNames: ['protocol', 'limit'], registers });
    this.poolBackends = new Gauge({ name: 'airlock_pool_backends', help: 'Pooled PostgreSQL upstream backends, by state (idle, leased)', labelNames: ['connection', 'state'], registers });
    this.poolWaiting = new Gauge({ name: 'airlock_pool_waiting_clients', help: 'Client sessions waiting for a pooled upstream backend', labelNames: ['connection'], registers });
    this.poolPins = new Counter({ name: 'airlock_pool_pins_total', help: 'Pooled sessions pinned to their backend (session state), by reason', labelNames: ['connection', 'reason'], registers });
    if (store) {
      // Gateway workers (gateway/cluster) each see the one audit writer's state: aggregated, the
      // worst view counts, not the sum.
      new Gauge({ name: 'airlock_audit_queue_depth', aggregator: 'max', help: 'Audit records accepted but not yet persisted', registers, collect() { this.set(store.health().pending); } });
      new Gauge({ name: 'airlock_audit_lag_seconds', aggregator: 'max', help: 'Age of the oldest audit record not yet persisted', registers, collect() { this.set(store.health().lagMs / 1000); } });
      new Gauge({ name: 'airlock_audit_healthy', aggregator: 'min', help: '1 when the audit store persists records within its bounds', registers, collect() { this.set(store.health().ok ? 1 : 0); } });
      new Gauge({ name: 'airlock_audit_dropped', aggregator: 'max', help: 'Audit records given up on since start', registers, collect() { this.set(store.health().dropped); } });
    }
  }

  /**
   * Per audit sink (audit.sinks): entries not delivered yet, the age of the oldest of them, and
   * failed deliveries. Read when scraped, from the sinks' own status (what `airlock audit status` shows).
   */
  watchSinks(status: () => SinkStatus[]): void {
    const registers = [this.registry];
    new Gauge({
      name: 'airlock_audit_sink_lag_records',
      help: 'Audit journal entries a sink has not delivered yet',
      labelNames: ['sink', 'type'],
      registers,
      collect() {
        this.reset();
        for (const s of status()) this.set({ sink: s.name, type: s.type }, s.lag);
      },
    });
    new Gauge({
      name: 'airlock_audit_sink_lag_seconds',
      help: 'Age of the oldest audit journal entry a sink has not delivered yet',
      labelNames: ['sink', 'type'],
      registers,
      collect() {
        this.reset();
        for (const s of status()) this.set({ sink: s.name, type: s.type }, s.lagSeconds ?? 0);
      },
    });
    new Counter({
      name: 'airlock_audit_sink_failures_total',
      help: 'Failed audit sink deliveries (each is retried with backoff)',
      labelNames: ['sink', 'type'],
      registers,
      collect() {
        // The sinks count; the counter mirrors their monotonic totals.
        this.reset();
        for (const s of status()) this.inc({ sink: s.name, type: s.type }, s.failures ?? 0);
      },
    });
  }

  /**
   * The counts of operations decided in `protocol`: a session increments `counts[decision]` per
   * operation; `airlock_operations_total` includes them whenever it is read (scrape, aggregation).
   */
  operationCounts(protocol: string): OperationCounts {
    let c = this.#operationCounts.get(protocol);
    if (!c) {
      c = { allow: 0, mask: 0, review: 0, deny: 0 };
      this.#operationCounts.set(protocol, c);
    }
    return c;
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}
