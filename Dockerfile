# syntax=docker/dockerfile:1

# floodgate's container image: a static binary on distroless, running as a
# non-root user, with nothing else in it (no shell, no package manager).
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t floodgate .
#   docker run --rm -p 9001:9001 -p 9090:9090 floodgate
#
# Multi-platform (docker buildx build --platform linux/amd64,linux/arm64):
# the build stage runs on the build machine and cross-compiles, which a
# CGO_ENABLED=0 build does without emulation.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Modules first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# VERSION is what floodgate --version prints and logs at startup.
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# CGO_ENABLED=0: a static binary that needs no libc, as the final image has
# none. -trimpath: no paths of the build machine in the binary. -tags
# vtprotobuf: go-control-plane's generated code marshals Check responses.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags vtprotobuf -ldflags "-s -w -X main.version=$VERSION" -o /out/floodgate ./cmd/floodgate

# distroless static: CA certificates, tzdata and /etc/passwd, no libc, no
# shell.
FROM gcr.io/distroless/static-debian13:nonroot

ARG VERSION=dev
LABEL org.opencontainers.image.title="floodgate" \
      org.opencontainers.image.description="Rate limiter for Envoy's ext_authz filter" \
      org.opencontainers.image.source="https://github.com/floodgate-rl/floodgate" \
      org.opencontainers.image.version="$VERSION"

COPY --from=build /out/floodgate /floodgate

# The image's nonroot user (65532), by number: Kubernetes can only check
# runAsNonRoot against a numeric user.
USER 65532:65532

# 9001: gRPC, Envoy's ext_authz Check and grpc.health.v1 (--grpc-addr).
# 9090: HTTP admin, /healthz, /readyz and /metrics (--admin-addr).
EXPOSE 9001 9090

ENTRYPOINT ["/floodgate"]
