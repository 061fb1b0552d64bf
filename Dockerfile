# One image with both binaries: /usr/local/bin/redis-operator and /usr/local/bin/redis-webhook.
# docker build -t redis-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# One at a time, so that neither binary gets dependency features only the
# other needs (as `make release` does).
RUN cargo build --release --locked -p redis-operator && cargo build --release --locked -p redis-webhook

# Distroless: no shell, no package manager; runs as the nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/redis-operator /src/target/release/redis-webhook /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/redis-operator"]
