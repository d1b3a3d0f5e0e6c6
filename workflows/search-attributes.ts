// Custom search attributes on approval workflows, so auditors can list them in Temporal
// (`AirlockRequester = "agent-x" AND AirlockOutcome = "rejected"`). Pure definitions: imported by
// workflow code (sandboxed) as well as by the client, the worker and the dev server.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const REQUESTER = defineSearchAttributeKey('AirlockRequester', SearchAttributeType.KEYWORD);
export const CONNECTION = defineSearchAttributeKey('AirlockConnection', SearchAttributeType.KEYWORD);
export const OUTCOME = defineSearchAttributeKey('AirlockOutcome', SearchAttributeType.KEYWORD);
export const APPROVERS = defineSearchAttributeKey('AirlockApprovers', SearchAttributeType.KEYWORD_LIST);
export const REJECTER = defineSearchAttributeKey('AirlockRejecter', SearchAttributeType.KEYWORD);

/** Name -> type as the Temporal CLI spells it (`--search-attribute NAME=TYPE`). */
export const SEARCH_ATTRIBUTES: Record<string, 'Keyword' | 'KeywordList'> = {
  AirlockRequester: 'Keyword',
  AirlockConnection: 'Keyword',
  AirlockOutcome: 'Keyword',
  AirlockApprovers: 'KeywordList',
  AirlockRejecter: 'Keyword',
};
