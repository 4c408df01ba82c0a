# Mandate as a container: `mandate serve --http` on port 8080, its database
# on the /data volume. See docs/deploy.md.
#
#   docker build -t mandate .
#   docker run --rm -v mandate-data:/data mandate agent key create demo-agent
#   docker run -d --name mandate -v mandate-data:/data -p 127.0.0.1:8080:8080 mandate serve --insecure-http
#
# Off loopback, serve --http requires TLS or an explicit --insecure-http, and
# a container listens on 0.0.0.0. So the default command needs a certificate
# (MANDATE_TLS_CERT and MANDATE_TLS_KEY, e.g. mounted at /tls) and refuses to
# start without one; behind a TLS-terminating proxy, run
# `serve --insecure-http` instead (warned about at every start).

# Build: a static binary (the SQLite driver is pure Go, so CGO is off),
# -trimpath so no build machine paths end up in it, and the VCS revision
# kept: .git is in the build context on purpose (see .dockerignore), and
# `mandate version` names the commit it was built from.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# VERSION, if given (--build-arg VERSION=v1.2.3), names a release; the
# revision is still appended from the build info.
ARG VERSION=
# Go stamps VCS info only when .git is a directory and git can read it; a
# context without it (a git worktree, an exported tarball) still builds, as
# "(devel) without VCS info", and says so in the build log.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    git config --global --add safe.directory /src; \
    flags="-s -w${VERSION:+ -X main.version=$VERSION}"; \
    CGO_ENABLED=0 go build -trimpath -buildvcs=auto -ldflags="$flags" -o /out/mandate ./cmd/mandate \
    || { echo "Dockerfile: no usable VCS info in the build context; building without it"; \
         CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="$flags" -o /out/mandate ./cmd/mandate; } \
    && /out/mandate version \
    && mkdir -p /out/data /out/etc/mandate

# Run: distroless static (CA certificates for HTTPS backends and webhooks,
# tzdata, /etc/passwd), no shell, as the unprivileged user nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mandate /usr/local/bin/mandate
# /data belongs to nonroot, so a new named volume starts writable by it.
COPY --from=build --chown=65532:65532 /out/data /data
# Policy files: mount a directory with model.conf, policy.csv and rates.csv
# here (read-only is fine; edits are hot-reloaded); without one the embedded
# defaults apply.
COPY --from=build /out/etc/mandate /etc/mandate
WORKDIR /etc/mandate
USER 65532:65532
VOLUME /data
ENV MANDATE_HTTP=0.0.0.0:8080 \
    MANDATE_DB=/data/mandate.db \
    MANDATE_STORE=/data/store.db \
    MANDATE_LOG_FORMAT=json
EXPOSE 8080
# Every subcommand runs with the same environment, so
# `docker run … mandate agent key create NAME` writes the same /data/mandate.db
# the server reads. The default command is `mandate serve`, which with
# MANDATE_HTTP set is `mandate serve --http 0.0.0.0:8080 --db /data/mandate.db`.
# No HEALTHCHECK: the image has no shell or HTTP client; point the
# orchestrator at GET /healthz (see docs/deploy.md).
ENTRYPOINT ["/usr/local/bin/mandate"]
CMD ["serve"]
