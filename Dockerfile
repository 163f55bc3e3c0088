# keysync: a release binary on a distroless base (no shell, non-root).
#
#   docker build -t keysync .          # context: the repository root (see .dockerignore)
#   docker run --rm -v keysync-state:/state keysync watch …
#
# The build stage's Rust version must be at least the highest `rust-version`
# in Cargo.lock, and Cargo.toml's `rust-version` must equal that maximum:
# .ci/check-image checks both offline (and lints this file with hadolint).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The state directory, owned by the runtime user (distroless `nonroot`,
# uid/gid 65532). The runtime stage has no shell to mkdir/chown, so it is made
# here and copied. A named volume mounted on /state starts as a copy of it,
# owned by 65532, instead of a root-owned directory keysync cannot write.
RUN install -d -m 0755 -o 65532 -g 65532 /out/state
COPY Cargo.toml Cargo.lock ./
# sim/ is a workspace member (and keysync's path dependency): needed to build.
COPY sim ./sim
COPY src ./src
RUN cargo build --release --locked --no-default-features --bin keysync

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="keysync" \
      org.opencontainers.image.description="Keeps Optimum's validator registry equal to the validators an operator owns" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/keysync /usr/local/bin/keysync
COPY --from=build --chown=65532:65532 /out/state /state
# rustls with bundled roots: no CA bundle needed. The sled store lives in
# /state; the API key never does (mount it as a secret, readable by 65532).
ENV KEYSYNC_DATA_DIR=/state KEYSYNC_LISTEN=0.0.0.0:9464
VOLUME ["/state"]
EXPOSE 9464
# Numeric, so Kubernetes' runAsNonRoot can verify it and hosts need no passwd entry.
USER 65532:65532
# The image has no shell or curl: keysync probes itself (GET /ready on
# KEYSYNC_LISTEN, on loopback; exit 0 ready, 1 not). Ready also means the
# beacon node is synced and every input reads: a long unhealthy spell is
# worth a look, not a restart loop.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/keysync", "probe"]
ENTRYPOINT ["/usr/local/bin/keysync"]
CMD ["watch"]
