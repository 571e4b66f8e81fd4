# smsgate container image: docs/deploy-docker.md.
#   docker build -t smsgate --build-arg SMSGATE_BUILD_COMMIT=$(git rev-parse --short HEAD) .
# Build stage: dependencies are compiled in their own layer (against a dummy crate), so
# a change under src/ recompiles only smsgate itself.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The commit for `smsgate --version` (.git is not in the build context):
#   docker build --build-arg SMSGATE_BUILD_COMMIT=$(git rev-parse --short HEAD) .
ARG SMSGATE_BUILD_COMMIT=unknown
ENV SMSGATE_BUILD_COMMIT=${SMSGATE_BUILD_COMMIT}
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# COPY keeps the build context's mtimes, which can be older than the dummy build's
# output: touch the crate roots so cargo rebuilds smsgate instead of keeping the dummy.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/smsgate /out/smsgate

# Runtime: glibc, the binary (rustls, no OpenSSL), a CA bundle, and the unprivileged
# user smsgate with the fixed uid/gid 10001.
FROM debian:bookworm-slim
# The builder image has Debian's ca-certificates bundle: taking the file from there keeps
# apt out of this stage (smsgate itself also carries webpki roots for Twilio's TLS).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# A system account (no password aging) with a uid above Debian's system range, so it
# matches no host account: -K raises SYS_UID_MAX for this call, which keeps useradd from
# warning that 10001 is above it.
RUN groupadd --system --gid 10001 smsgate \
    && useradd --system -K SYS_UID_MAX=10001 --no-log-init --uid 10001 --gid smsgate \
        --home-dir /var/lib/smsgate --no-create-home --shell /usr/sbin/nologin smsgate \
    && install -d -m 0700 -o smsgate -g smsgate /var/lib/smsgate
COPY --from=build /out/smsgate /usr/local/bin/smsgate
COPY config/docker.json5 /etc/smsgate/smsgate.json5
# The sled store, agent.sock and admin.sock. A named volume starts with this
# directory's owner (10001) and mode; a bind mount must be chowned to it by hand.
VOLUME /var/lib/smsgate
USER 10001:10001
EXPOSE 8789
# `smsgate health` exits 0 when GET /readyz on gateway.listen answers 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["smsgate", "health"]
# SIGTERM drains and exits within 10 s: give it more than Docker's default 10 s
# (docker run --stop-timeout 15, compose stop_grace_period: 15s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["smsgate"]
CMD ["gateway"]
