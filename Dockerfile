# keysync: a static-ish release binary on a distroless base (no shell, non-root).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY sim ./sim
COPY src ./src
RUN cargo build --release --locked --bin keysync

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/keysync /usr/local/bin/keysync
# rustls with bundled roots: no CA bundle needed; state under /state.
ENV KEYSYNC_DATA_DIR=/state KEYSYNC_LISTEN=0.0.0.0:9464
EXPOSE 9464
USER nonroot
ENTRYPOINT ["/usr/local/bin/keysync"]
CMD ["watch"]
