// Free text (statement literals, parameter values, error messages) with every value a PII detector
// recognises replaced by `[redacted:<detector>]`. Used where text reaches people rather than the
// client: what an approver is shown and what the audit store keeps. Deliberately stricter than
// result masking (all detectors, always on): nobody configured these texts as safe.
import { DETECTOR_PRIORITY, detectorMask, findSpans, quickCheckString } from './detectors.ts';
import { redactToken } from './strategies.ts';

const ALL = detectorMask(DETECTOR_PRIORITY);

export function redactDetected(text: string): string {
  const candidates = quickCheckString(text, ALL);
  if (candidates === 0) return text;
  const spans = findSpans(text, candidates);
  if (spans.length === 0) return text;
  let out = '';
  let pos = 0;
  for (const s of spans) {
    out += text.slice(pos, s.start) + redactToken(s.detector);
    pos = s.end;
  }
  return out + text.slice(pos);
}
