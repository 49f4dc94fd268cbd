package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// ErrNotRegistered means a sync stream named a cluster that never registered.
var ErrNotRegistered = errors.New("cluster is not registered: call Register first")

// ErrSessionReplaced means a newer stream of the same cluster took the session over.
var ErrSessionReplaced = errors.New("session replaced by a newer stream of the same cluster")

// ErrJoinDisabled means the hub has no CA key to sign with.
var ErrJoinDisabled = errors.New("join flow disabled: the hub has no CA key to sign certificates with (--ca-key-file)")

// ErrNotReady means the hub has not loaded the fleet's revocations yet, so it cannot tell a
// revoked certificate from a good one.
var ErrNotReady = errors.New("the hub has not loaded the fleet's revocations yet: retry in a moment")

// ErrNoHopKeys means the fleet has no hop keys yet: the leading replica creates the first.
var ErrNoHopKeys = errors.New("the fleet has no hop keys yet: the leading hub replica creates them (is one leading?)")

// ErrObserver means an observer session sent what only a full session may send.
var ErrObserver = errors.New("an observer session receives the fleet view and hop keys and sends nothing else")

// ErrViewNotLoaded means the hub's fleet view has not loaded the registry yet: it would answer
// with an empty fleet.
var ErrViewNotLoaded = errors.New("the hub has not loaded the registry yet: retry in a moment")

// ErrRevokedRecently means a certificate cannot be issued yet: it would start before the
// cluster's revocation and be refused with the revoked ones.
var ErrRevokedRecently = errors.New("cluster was revoked moments ago: a certificate issued now would count as revoked")

// deniedError refuses a caller: Unauthenticated or PermissionDenied with a message that says
// why, counted in spillway_hub_auth_denied_total under reason.
type deniedError struct {
	code   codes.Code
	reason string
	msg    string
}

func (e *deniedError) Error() string { return e.msg }

func denied(code codes.Code, reason, format string, args ...any) error {
	return &deniedError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// rateError is a stream that sent faster than the hub allows, counted under limit.
type rateError struct{ limit, msg string }

func (e *rateError) Error() string { return e.msg }

// fail counts err in the metrics of limits and refusals and returns it as a gRPC status; every
// handler's error goes through it once (a status is passed through and never counted again).
func (s *Server) fail(err error) error {
	var d *deniedError
	var lim *registry.LimitError
	var rate *rateError
	var many *tooManyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &d):
		s.metrics.denied.WithLabelValues(d.reason).Inc()
	case errors.As(err, &lim):
		s.metrics.limited.WithLabelValues(lim.Limit).Inc()
	case errors.As(err, &rate):
		s.metrics.limited.WithLabelValues(rate.limit).Inc()
	case errors.As(err, &many):
		s.metrics.limited.WithLabelValues(many.limit).Inc()
	}
	return toStatus(err)
}

// toStatus is the one place where domain errors become gRPC status codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) {
		return err
	}
	var d *deniedError
	var rate *rateError
	code := codes.Internal
	switch {
	case errors.As(err, &d):
		code = d.code
	case errors.As(err, &rate), errors.Is(err, registry.ErrLimit):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, registry.ErrInvalid), errors.Is(err, tlsconfig.ErrInvalidCSR):
		code = codes.InvalidArgument
	case errors.Is(err, registry.ErrTokenInvalid):
		code = codes.Unauthenticated
	case errors.Is(err, ErrNotRegistered), errors.Is(err, ErrJoinDisabled), errors.Is(err, ErrObserver), errors.Is(err, registry.ErrJoinConflict),
		errors.Is(err, registry.ErrNotPending), errors.Is(err, ErrCannotExplain):
		code = codes.FailedPrecondition
	case errors.Is(err, registry.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrSessionReplaced):
		code = codes.Aborted
	case errors.Is(err, registry.ErrSessionLost), errors.Is(err, ErrNotReady), errors.Is(err, ErrViewNotLoaded),
		errors.Is(err, ErrRevokedRecently), errors.Is(err, ErrNoHopKeys), errors.Is(err, ErrNoSessionHere):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
