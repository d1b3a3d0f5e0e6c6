// A tool call as the policy sees it: protocol `mcp`, kind `mcp-tool`, text `<target>/<tool> <args>`
// where the arguments are canonical JSON (keys sorted), so rules can match a tool by name and an
// argument by pattern (`text: ['^files/delete ', '"path":"/etc/']`) and the approval binding covers
// exactly what runs, whatever key order the client used.
import { createHash } from 'node:crypto';
import type { Identity, Operation } from '../policy/operation.ts';

/** JSON with object keys sorted at every level: equal values, equal text. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .filter((k) => o[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

export interface ToolCallContext {
  identity: Identity;
  sessionId: string;
  clientAddress: string;
}

/** The operation of calling `tool` on `target` (an upstream MCP server or a native connection). */
export function toolOperation(ctx: ToolCallContext, target: string, tool: string, args: Record<string, unknown>): Operation {
  return {
    protocol: 'mcp',
    identity: ctx.identity,
    connection: { name: target, clientAddress: ctx.clientAddress, sessionId: ctx.sessionId },
    kind: 'mcp-tool',
    text: `${target}/${tool} ${canonicalJson(args)}`,
    tables: [],
    functions: [],
  };
}

/** What a session saw of a tool when it listed it: a change means a different tool. */
export function toolFingerprint(t: { name: string; description?: string; inputSchema?: unknown; outputSchema?: unknown; annotations?: unknown }): string {
  return createHash('sha256')
    .update(canonicalJson({ name: t.name, description: t.description ?? '', inputSchema: t.inputSchema ?? null, outputSchema: t.outputSchema ?? null, annotations: t.annotations ?? null }))
    .digest('hex');
}
