# syntax=docker/dockerfile:1
# Airlock gateway and approval worker (one image; the command picks the role).
# Build: docker build -t airlock .   Run: docker run airlock gateway --config /etc/airlock/airlock.yaml
# Base images are pinned to exact versions; pin digests too (image@sha256:...) in your registry mirror.

# --- deps: production dependencies only, compiled native modules (better-sqlite3, libpg-query) ---
FROM node:20.19.5-bookworm-slim AS deps
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# --- runtime: no compilers, no npm cache, no Temporal CLI, not root ---
FROM node:20.19.5-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json package-lock.json ./
COPY --chown=root:root bin ./bin
COPY --chown=root:root gateway ./gateway
COPY --chown=root:root workflows ./workflows
COPY --chown=root:root bots ./bots
# The code is owned by root and read-only to the service user; only its data directory is writable.
RUN mkdir -p /var/lib/airlock /etc/airlock && chown node:node /var/lib/airlock
USER node:node
# 6432 PostgreSQL, 2222 SSH, 8443 HTTP/Kubernetes, 9090 admin listener (/healthz, /readyz, /metrics).
EXPOSE 6432 2222 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/airlock.js"]
CMD ["gateway", "--config", "/etc/airlock/airlock.yaml"]
