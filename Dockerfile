# syntax=docker/dockerfile:1
# upload-gateway container image: a glibc build on Debian 12 (bookworm), run on distroless.
#   docker build -t upload-gateway:0.1.0 .
# conf/kubernetes.yaml runs this image; deploy/README.md has the whole Kubernetes path.

# ---- Builder: the official Rust toolchain on Debian 12, the same glibc as the runtime image.
FROM rust:1-bookworm AS builder

# Pingora's zlib-ng (libz-ng-sys) is built with cmake; the image already has gcc, make and perl.
# Versions are not pinned: bookworm point releases drop old versions from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The whole package (.dockerignore keeps target/, .git and the fuzz workspace out), so every
# target the manifest declares (benches, examples, tests) is there for Cargo to load it.
COPY . .

# Release build of the one binary, exactly as Cargo.lock pins it (--locked). The registry and
# target/ are BuildKit cache mounts (kept between builds, never in an image layer), so the
# binary is copied out of the target cache into /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin upload-gateway \
 && install -D -m 0755 target/release/upload-gateway /out/upload-gateway

# ---- Runtime: distroless with glibc, libgcc_s and CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

# The binary, root-owned and not writable by the user that runs it.
COPY --from=builder /out/upload-gateway /usr/local/bin/upload-gateway

# A default configuration. It listens on loopback (127.0.0.1), so a bare `docker run` needs a
# configuration mounted over /etc/upload-gateway; Kubernetes mounts the ConfigMap there.
COPY conf/gateway.toml /etc/upload-gateway/gateway.toml

# distroless's "nonroot" user (65532:65532); the manifest's runAsUser/runAsGroup match it.
USER 65532:65532

# 8080: the API listener (server.listen); 9091: admin /metrics, /healthz, /readyz.
EXPOSE 8080 9091

# The gateway itself is PID 1; SIGTERM starts its graceful drain (server.shutdown_grace_s).
ENTRYPOINT ["/usr/local/bin/upload-gateway"]
CMD ["--config", "/etc/upload-gateway/gateway.toml"]
