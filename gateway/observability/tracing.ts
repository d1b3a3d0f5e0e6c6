// OpenTelemetry traces (config `observability.tracing`): one tracer provider per running gateway,
// exporting over OTLP/HTTP (JSON) through a batch processor, flushed and shut down with the gateway.
// Not registered globally: several gateways in one process (tests, the demo) keep their own.
//
// Off (the default) means no tracer at all: the enforcement seam checks `tracer === undefined`
// once per operation and allocates nothing. What goes into spans is decided in
// gateway/enforce/trace.ts (never statement text, literals or masked values).
import { ROOT_CONTEXT, trace, TraceFlags, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-node';
import type { Logger } from 'pino';
import { validTraceparent } from '../enforce/context.ts';
import { EventRateLimiter } from '../net/rate-limit.ts';

export interface TracingConfig {
  enabled: boolean;
  /** OTLP/HTTP traces URL (…/v1/traces). */
  endpoint: string;
  serviceName: string;
  /** 0..1: share of traces started here that are sampled; a client's traceparent flag decides for its own. */
  sampleRatio: number;
  /** Resolved header values (secrets already read). */
  headers?: Record<string, string>;
}

export interface GatewayTracing {
  readonly tracer: Tracer;
  /** Exports every finished span now (tests, drain). */
  forceFlush(): Promise<void>;
  /** Flushes and stops exporting (gateway shutdown). Idempotent. */
  shutdown(): Promise<void>;
}

/**
 * The OTLP exporter, saying in the gateway's log (at most a line a minute, with a count of the
 * rest) when the collector refuses or cannot be reached: OpenTelemetry's own diagnostics are
 * silent unless a global logger is installed.
 */
class LoggedExporter implements SpanExporter {
  private readonly limiter = new EventRateLimiter(1, 60_000);

  constructor(
    private readonly inner: SpanExporter,
    private readonly logger: Logger | undefined,
    private readonly endpoint: string,
  ) {}

  export(spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    this.inner.export(spans, (result) => {
      if (result.code !== 0 && this.logger) {
        const v = this.limiter.take();
        if (v.pass) this.logger.warn({ endpoint: this.endpoint, spans: spans.length, err: result.error?.message, suppressed: v.suppressed }, 'trace export failed; spans dropped');
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

/** The tracer provider for `cfg`, or undefined when tracing is off. */
export function startTracing(cfg: TracingConfig | undefined, opts: { logger?: Logger; version?: string } = {}): GatewayTracing | undefined {
  if (!cfg?.enabled) return undefined;
  const { version } = opts;
  const exporter = new LoggedExporter(new OTLPTraceExporter({ url: cfg.endpoint, ...(cfg.headers ? { headers: cfg.headers } : {}), timeoutMillis: 10_000 }), opts.logger, cfg.endpoint);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': cfg.serviceName, ...(version ? { 'service.version': version } : {}) }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(cfg.sampleRatio) }),
    // Bounded queue: a collector that is down costs memory up to maxQueueSize spans, then drops.
    spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMillis: 2000 })],
  });
  const tracer = provider.getTracer('airlock-gateway', version);
  let closed: Promise<void> | undefined;
  return {
    tracer,
    forceFlush: () => provider.forceFlush(),
    shutdown: () => (closed ??= provider.shutdown()),
  };
}

/**
 * The parent context of a client's W3C traceparent: a remote span context when it is valid
 * (strict syntax, non-zero ids, version not ff; see enforce/context.ts), else the root context,
 * so a malformed value starts a trace of Airlock's own and is otherwise ignored.
 */
export function parentFromTraceparent(traceparent: string | undefined): Context {
  const t = validTraceparent(traceparent);
  if (!t) return ROOT_CONTEXT;
  const traceId = t.slice(3, 35);
  const spanId = t.slice(36, 52);
  const flags = Number.parseInt(t.slice(53, 55), 16) & TraceFlags.SAMPLED;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: flags, isRemote: true });
}

/** The W3C traceparent naming `span` (for the approval workflow's memo), or undefined for a non-recording no-op span. */
export function traceparentOf(span: Span): string | undefined {
  const c = span.spanContext();
  if (!trace.isSpanContextValid(c)) return undefined;
  return `00-${c.traceId}-${c.spanId}-0${c.traceFlags & TraceFlags.SAMPLED}`;
}

/** A child context of `span`. */
export function under(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}
