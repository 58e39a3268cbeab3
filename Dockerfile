# One image for the whole bridge: bbb-ingest, bbb-worker, bbb-scheduler and the operator command
# bbb (migrate, config check, queue, tasks, dead-letters, sandbox, demo, serve-status). There is
# no entrypoint: the container's command names the binary, e.g.
#
#   docker build -t bbb .
#   docker run --rm -v "$PWD/config.json:/etc/bbb/config.json:ro" \
#       -e BBB_CONFIG=/etc/bbb/config.json -p 9102:9102 \
#       bbb bbb-worker --metrics-addr 0.0.0.0:9102
#
# Works with BuildKit and with the legacy builder: the dependencies are compiled in their own
# layer (from the manifests only), so editing the bridge's sources recompiles only the bridge.
ARG RUST_IMAGE=rust:1.95-bookworm

# --- skeleton: the manifests, the lock file, the vendored crate, and an empty stand-in for
# every target root (lib.rs, main.rs, bin/, benches/). Its output changes only when a manifest
# or the vendored crate does, so the dependency build below stays cached across source edits
# (COPY --from is cached by content, not by time).
FROM ${RUST_IMAGE} AS skeleton
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    cp -r vendor /skeleton/vendor; \
    find . -name Cargo.toml -not -path './vendor/*' -not -path './target/*' -not -path './Cargo.toml' | while read -r m; do \
        mkdir -p "/skeleton/$(dirname "$m")"; cp "$m" "/skeleton/$m"; \
    done; \
    find . -not -path './vendor/*' -not -path './target/*' \( -path '*/src/lib.rs' -o -path '*/src/main.rs' \
        -o -path '*/src/bin/*.rs' -o -path '*/benches/*.rs' \) | while read -r f; do \
        mkdir -p "/skeleton/$(dirname "$f")"; \
        case "$f" in */lib.rs) : > "/skeleton/$f" ;; *) echo 'fn main() {}' > "/skeleton/$f" ;; esac; \
    done

# --- build: dependencies first (cached layer), then the bridge itself.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked --bins
COPY . .
# The real sources may be older than the stand-ins just built: touch them so cargo rebuilds the
# workspace's own crates. The bridge DB's migrations (migrations/), the Buildbot schema
# (shared/sql/) and the payload schema are compiled into the binaries (sqlx::migrate!,
# include_str!): the runtime image needs none of them.
RUN find . -path ./target -prune -o -path ./vendor -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/bbb target/release/bbb-ingest target/release/bbb-worker \
          target/release/bbb-scheduler /out/

# --- runtime: glibc, CA certificates (Taskcluster, Pulse over TLS) and curl (health checks).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 bbb \
    && useradd --system --uid 10001 --gid bbb --home-dir /var/lib/bbb --create-home \
               --shell /usr/sbin/nologin bbb
COPY --from=build /out/ /usr/local/bin/
# Example configurations, for reference and for `docker run ... bbb config check`. Mount the
# real one (read-only) and point BBB_CONFIG at it; secrets can come from the environment
# (TASKCLUSTER_ACCESS_TOKEN, BBB_PULSE_URL, BBB_BBB_DB, ...) instead of the file.
COPY examples/ /usr/share/bbb/examples/
# The working directory is writable by the bridge's user: relative SQLite URLs
# (sqlite:///bbb.db) land here; mount a volume on it to keep them.
WORKDIR /var/lib/bbb
# Numeric, so that orchestrators enforcing "run as non-root" can check it.
USER 10001:10001
# /metrics, /healthz and /readyz when started with --metrics-addr 0.0.0.0:<port>, by
# convention: bbb-ingest 9101, bbb-worker 9102, bbb-scheduler 9103 (which also serves the
# status page at / and /status.json).
EXPOSE 9101 9102 9103
CMD ["bbb", "--help"]
