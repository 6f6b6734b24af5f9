# warren in a container: a multi-stage build, then a distroless image (glibc,
# no shell) running as a non-root user.
#
#   docker build -t warren --build-arg WARREN_GIT_REV=$(git rev-parse --short=12 HEAD) .
#   docker run -d --name warren -p 5672:5672 -p 15672:15672 \
#       -v warren-data:/var/lib/warren warren
#   docker exec warren warren ctl await_startup
#
# The configuration is src/bin/warren/dist/docker.conf, installed as
# /etc/warren/warren.conf (listen on every interface, guest allowed from
# outside the container's loopback, data in the volume); mount another file
# there to change it. Only Cargo.toml, Cargo.lock and src/ are copied, so the
# build (BuildKit, Docker's default builder) reads nothing else of the
# checkout; without .git the binary's --version takes WARREN_GIT_REV.

# The builder is the oldest Rust warren supports (Cargo.toml's rust-version).
ARG RUST_VERSION=1.89
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
ARG WARREN_GIT_REV=
ENV WARREN_GIT_REV=${WARREN_GIT_REV}
RUN cargo build --release --locked --bin warren \
    && install -D -m 0755 target/release/warren /out/usr/bin/warren \
    && install -D -m 0644 src/bin/warren/dist/docker.conf /out/etc/warren/warren.conf \
    && install -D -m 0644 src/bin/warren/dist/warren.conf /out/usr/share/doc/warren/warren.conf.example \
    && install -d -m 0750 /out/var/lib/warren \
    && /out/usr/bin/warren --version

# distroless/cc: glibc and libgcc for a Rust binary, nothing else; :nonroot
# runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr /usr
COPY --from=build /out/etc/warren /etc/warren
COPY --from=build --chown=65532:65532 /out/var/lib/warren /var/lib/warren
USER 65532:65532
WORKDIR /var/lib/warren
# AMQP, the management API, Prometheus metrics.
EXPOSE 5672 15672 15692
VOLUME ["/var/lib/warren"]
# SIGTERM (docker stop) closes connections with 320 and syncs the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/warren"]
CMD ["--config", "/etc/warren/warren.conf"]
