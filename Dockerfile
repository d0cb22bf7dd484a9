# Edict's images: `--target server` (the `edict` binary: every role, `edict serve`) and `--target agent`
# (`edict-agent`). Both run as an unprivileged user. The dependency layer is built from the manifests
# alone, so a change to Edict's own code rebuilds only Edict's crates.
#
#   docker build --target server -t edict .
#   docker build --target agent -t edict-agent .

FROM rust:1.90-bookworm AS build
WORKDIR /src
# 1. Dependencies only: the workspace's manifests and lock file, with empty crates in place of the code.
COPY Cargo.toml Cargo.lock ./
COPY domain/Cargo.toml domain/
COPY application/Cargo.toml application/
COPY infrastructure/Cargo.toml infrastructure/
COPY infrastructure/backoff/Cargo.toml infrastructure/backoff/
COPY projections/Cargo.toml projections/
COPY agent/Cargo.toml agent/
COPY api-spec/Cargo.toml api-spec/
COPY tests/bench/Cargo.toml tests/bench/
COPY tests/kit/Cargo.toml tests/kit/
RUN for crate in . domain application infrastructure infrastructure/backoff projections agent api-spec tests/bench tests/kit; do \
        mkdir -p "$crate/src" && echo 'fn main() {}' > "$crate/src/main.rs" && touch "$crate/src/lib.rs"; \
    done \
    && mkdir -p tests/e2e api-spec/tests && echo "fn main() {}" > tests/e2e/main.rs && touch api-spec/tests/gateway.rs \
    && cargo build --release --locked -p edict -p edict-agent \
    && rm -rf src */src infrastructure/backoff/src tests/*/src tests/e2e api-spec/tests \
    && find target/release -maxdepth 1 -type f -delete \
    && rm -rf target/release/.fingerprint/edict*
# 2. Edict itself.
COPY . .
RUN cargo build --release --locked -p edict -p edict-agent

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 edict \
    && useradd --system --uid 10001 --gid edict --home-dir /var/lib/edict --create-home --shell /usr/sbin/nologin edict

FROM runtime AS server
COPY --from=build /src/target/release/edict /usr/local/bin/edict
USER edict:edict
WORKDIR /var/lib/edict
# The embedded store (SQLite) when no EDICT_DATABASE_URL is given.
ENV EDICT_DATA_DIR=/var/lib/edict/data
VOLUME ["/var/lib/edict"]
# The API (and the probes of processes without it) and the agents' gateway.
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s CMD ["curl", "-fsS", "http://127.0.0.1:8080/health/ready"]
ENTRYPOINT ["edict"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--gateway-listen", "0.0.0.0:8081"]

FROM runtime AS agent
COPY --from=build /src/target/release/edict-agent /usr/local/bin/edict-agent
USER edict:edict
WORKDIR /var/lib/edict
VOLUME ["/var/lib/edict"]
ENTRYPOINT ["edict-agent"]
CMD ["run"]
