# syntax=docker/dockerfile:1
# Image of the Spillway spoke and its Endpoint Picker: a static binary on distroless, run as
# distroless's nonroot user (65532), as deploy/ expects. Build from the repository root:
#
#   docker build -f deploy/docker/spoke.Dockerfile --build-arg VERSION=v0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/spillway-io/spoke:v0.1.0 .
#
# For several platforms, `docker buildx build --platform linux/amd64,linux/arm64 ...`: Go
# cross-compiles on the build machine's own platform, no emulation needed.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
# The build the binary says it is (`spoke version`, spillway_build_info, its registration).
ARG VERSION REVISION
WORKDIR /src
# Modules first, in a layer of their own: a change to the sources does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo: a static binary without libc, which is what the distroless static image can run.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/spillway-io/spillway/pkg/buildinfo.version=${VERSION} -X github.com/spillway-io/spillway/pkg/buildinfo.revision=${REVISION}" \
      -o /out/spoke ./spoke/cmd/spoke

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/spoke /usr/local/bin/spoke
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spoke"]
