# One image, three entrypoints (bbb-ingest, bbb-worker, bbb-scheduler) plus the bbb command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 bbb
COPY --from=build /src/target/release/bbb /src/target/release/bbb-ingest \
     /src/target/release/bbb-worker /src/target/release/bbb-scheduler /usr/local/bin/
USER bbb
CMD ["bbb-worker"]
