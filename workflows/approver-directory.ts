// Who a verified decision comes from, and which groups they are in, from the WORKER's own
// configuration: `identities` (name -> groups) and the chat user maps (`slack.users`,
// `teams.users`). Never from what the caller sent. With `approvers.source: oidc`, chat approvers
// come from the identity registry instead (idp-approvers.ts): groups are the IdP's group claim.
import type { DecisionSource } from '../bots/channel.ts';
import type { AirlockConfig } from '../gateway/config/schema.ts';
import type { IdentityRegistry } from '../gateway/recording/identity-registry.ts';
import { approversFromIdp, idpApproverByIdentity } from './idp-approvers.ts';

export type ApproverLookup = { ok: true; identity: string; groups: string[] } | { ok: false; error: string };

function mapped(users: Record<string, string> | undefined, key: string): string | undefined {
  if (!users) return undefined;
  const k = key.toLowerCase();
  return Object.entries(users).find(([u]) => u.toLowerCase() === k)?.[1];
}

/**
 * Resolves the approver a signed decision names. A chat user the config maps explicitly must be
 * the approver the app named (the app cannot speak for someone else); an unmapped one was matched
 * by email by the app, which signed for it. Either way the identity must be configured, and its
 * groups are the configured ones.
 */
export function resolveApprover(config: AirlockConfig, source: DecisionSource, approver: string, channelUser: string, registry?: IdentityRegistry): ApproverLookup {
  const name = approver.trim();
  if (!name) return { ok: false, error: `${source} user ${channelUser || '(unknown)'} is not mapped to an Airlock identity` };
  if ((source === 'slack' || source === 'teams') && approversFromIdp(config)) {
    // The chat app matched the account's verified email; the groups are read here, from the registry.
    const who = idpApproverByIdentity(config, registry, name);
    return who.ok ? { ok: true, identity: who.identity, groups: who.groups } : { ok: false, error: who.error };
  }
  const users = source === 'slack' ? config.slack?.users : source === 'teams' ? config.teams?.users : undefined;
  const mappedTo = mapped(users, channelUser);
  if (mappedTo !== undefined && mappedTo !== name) {
    return { ok: false, error: `${source} user ${channelUser} is mapped to ${mappedTo}, not ${name}` };
  }
  const identity = config.identities.find((i) => i.name === name);
  if (!identity) return { ok: false, error: `${name} is not a configured identity` };
  return { ok: true, identity: identity.name, groups: [...identity.groups] };
}
