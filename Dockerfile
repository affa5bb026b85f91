# The one cairn binary, for containers. Build: docker build -t cairn .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p cairn-cli

FROM debian:bookworm-slim
# Tasks run as processes on the edge: give them a shell and the usual tools.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates procps \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cairn /usr/local/bin/cairn
ENTRYPOINT ["cairn"]
