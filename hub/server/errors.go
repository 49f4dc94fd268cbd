package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/hub/registry"
)

// ErrNotRegistered means a sync stream named a cluster that never registered.
var ErrNotRegistered = errors.New("cluster is not registered: call Register first")

// ErrSessionReplaced means a newer stream of the same cluster took the session over.
var ErrSessionReplaced = errors.New("session replaced by a newer stream of the same cluster")

// toStatus is the one place where domain errors become gRPC status codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, registry.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotRegistered):
		code = codes.FailedPrecondition
	case errors.Is(err, registry.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrSessionReplaced):
		code = codes.Aborted
	case errors.Is(err, registry.ErrSessionLost):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
