// Package e2e holds Spillway's end-to-end tests and the tools they start: the local fleet
// (localfleet, cmd/fleet) and the model-server simulator command (cmd/modelsim). The tests start
// real processes from the binaries `make build` puts in bin/ and assert what an operator sees.
package e2e
