# syntax=docker/dockerfile:1
# Image of the Spillway hub: static binaries on distroless, run as distroless's nonroot user
# (65532), as deploy/ expects. hubctl is in it too, so that an admin can use the credentials the
# hub writes on its volume without copying them out:
#   kubectl -n spillway-system exec deploy/spillway-hub -- hubctl get clusters
# Build from the repository root:
#
#   docker build -f deploy/docker/hub.Dockerfile --build-arg VERSION=v0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/spillway-io/hub:v0.1.0 .
#
# For several platforms, `docker buildx build --platform linux/amd64,linux/arm64 ...`: Go
# cross-compiles on the build machine's own platform, no emulation needed.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
# The build the binaries say they are (`hub version`, spillway_build_info).
ARG VERSION REVISION
WORKDIR /src
# Modules first, in a layer of their own: a change to the sources does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo: a static binary without libc, which is what the distroless static image can run.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/spillway-io/spillway/pkg/buildinfo.version=${VERSION} -X github.com/spillway-io/spillway/pkg/buildinfo.revision=${REVISION}" \
      -o /out/ ./hub/cmd/hub ./hub/cmd/hubctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hub /out/hubctl /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hub"]
