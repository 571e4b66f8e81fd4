# Placeholder until the operations issue: builds the binary and runs the gateway.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/smsgate smsgate && mkdir -p /var/lib/smsgate && chown smsgate /var/lib/smsgate
COPY --from=build /src/target/release/smsgate /usr/local/bin/smsgate
USER smsgate
VOLUME /var/lib/smsgate
EXPOSE 8789
ENTRYPOINT ["/usr/local/bin/smsgate"]
CMD ["gateway"]
