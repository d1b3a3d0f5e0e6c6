// Masking of websocket messages (upstream -> client) when a mask applies to an upgraded request.
// Without it an upgrade would be a way around every response mask (`watch` of secrets over a
// websocket, any service's websocket API).
//
// - Kubernetes remote-command channels (exec/attach: v5/v4.channel.k8s.io and base64 variants):
//   stdout, stderr and the status channel get the detectors, one message at a time (a value split
//   across two messages can escape; rules that need certainty should deny or review exec).
// - Everything else is a document stream (Kubernetes watch over websocket, base64.binary.k8s.io,
//   JSON APIs): each message must be one JSON document, masked like a response body; a text
//   message that is not JSON gets the detectors when no field mask applies. A message that cannot
//   be masked ends the connection (policy violation), it is never relayed.
import type { JsonMasker } from './json-mask.ts';

export type MaskedFrame = { data: Buffer; isBinary: boolean; masked: string[] } | { error: string };

export type FrameMasker = (data: Buffer, isBinary: boolean, protocol: string) => MaskedFrame;

const TEXT_CHANNELS = new Set([1, 2, 3]);

export function websocketFrameMasker(m: JsonMasker): FrameMasker {
  return (data, isBinary, protocol) => {
    try {
      const base64 = protocol.startsWith('base64.');
      if (protocol.endsWith('channel.k8s.io')) {
        if (data.length === 0) return { data, isBinary, masked: [] };
        const channel = base64 ? data[0] - 0x30 : data[0];
        if (!TEXT_CHANNELS.has(channel)) return { data, isBinary, masked: [] };
        const payload = base64 ? Buffer.from(data.subarray(1).toString('latin1'), 'base64') : data.subarray(1);
        const r = m.maskText(payload.toString('utf8'));
        if (r.masked.length === 0) return { data, isBinary, masked: [] };
        const out = Buffer.from(r.value, 'utf8');
        const frame = base64 ? Buffer.concat([data.subarray(0, 1), Buffer.from(out.toString('base64'), 'latin1')]) : Buffer.concat([data.subarray(0, 1), out]);
        return { data: frame, isBinary, masked: r.masked };
      }
      const payload = base64 ? Buffer.from(data.toString('latin1'), 'base64') : data;
      const text = payload.toString('utf8');
      let doc: unknown;
      let parsed = false;
      try {
        doc = JSON.parse(text);
        parsed = true;
      } catch {
        parsed = false;
      }
      let out: string;
      let masked: string[];
      if (parsed) {
        const r = m.mask(doc);
        out = JSON.stringify(r.value);
        masked = r.masked;
      } else if (!m.hasFields && !isBinary && !base64) {
        const r = m.maskText(text);
        out = r.value;
        masked = r.masked;
      } else {
        return { error: 'a websocket message that must be masked is not a JSON document; the connection was closed rather than relay it unmasked' };
      }
      const bytes = Buffer.from(out, 'utf8');
      return { data: base64 ? Buffer.from(bytes.toString('base64'), 'latin1') : bytes, isBinary, masked };
    } catch (err) {
      return { error: `a websocket message could not be masked (${(err as Error).message}); the connection was closed` };
    }
  };
}
