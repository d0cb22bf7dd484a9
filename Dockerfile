FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin edict --bin edict-agent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/edict /usr/local/bin/edict
COPY --from=build /src/target/release/edict-agent /usr/local/bin/edict-agent
ENTRYPOINT ["edict"]
