# Multi-stage build: compile in the official Rust image, run in a small Debian image as a non-root
# user with CA certificates (for TLS to SQS and the Records API). No curl: the health check is
# `sqs-batch-worker healthcheck`.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
RUN cargo build --release --locked --bin sqs-batch-worker \
 && strip target/release/sqs-batch-worker

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin worker
COPY --from=build /src/target/release/sqs-batch-worker /usr/local/bin/sqs-batch-worker
USER 10001:10001
EXPOSE 9090
ENV WORKER_LISTEN=0.0.0.0:9090 LOG_FORMAT=json
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/sqs-batch-worker", "healthcheck", "--listen", "127.0.0.1:9090"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sqs-batch-worker"]
CMD ["run"]
