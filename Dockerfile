# One image with all four binaries; docker-compose.yml picks the command.
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bins -p order-service -p delivery-service -p inventory-service -p outbox-relay \
 && mkdir /out \
 && cp target/release/order-service target/release/delivery-service \
       target/release/inventory-service target/release/outbox-relay /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mall
COPY --from=build /out/ /usr/local/bin/
USER mall
ENV GRPC_ADDR=0.0.0.0:8080
