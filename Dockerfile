# syntax=docker/dockerfile:1
# The weir image: static binaries on distroless, running as non-root:
# weir (every stage) and weir-collector (the collector alone, for the
# DaemonSet).
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t ghcr.io/weirmetrics/weir:dev .
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the build stage runs on the build machine and cross-compiles).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# Set by BuildKit from --platform (the target, not the build machine).
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0
# Modules first: this layer is reused while go.mod and go.sum stay the same.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/weirmetrics/weir/internal/cli.version=${VERSION}" \
      -o /out/ ./cmd/weir ./cmd/weir-collector

# static: no libc, no shell, CA certificates and /etc/passwd only;
# nonroot: uid and gid 65532, as the manifests' securityContext expects.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/weir /out/weir-collector /usr/local/bin/
USER 65532:65532
# `weir all` keeps its JetStream store in ./data: the home of nonroot is
# writable (mount a volume there to keep it).
WORKDIR /home/nonroot
# collector, sink, process (weir all), enricher, router, alerter
EXPOSE 9469 9470 9471 9472 9473 9474
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["all"]
